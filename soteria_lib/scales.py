"""The budgets every experiment runs at, in one table that the command lines, the sweep and the
notebooks (every chapter states its scale) all read; the introduction prints it (its "Scales" table).

* ``teaching``: what the notebooks and CI run on 2 CPU cores, in seconds per attack. Attacks
  stop far short of the published budgets; every chapter says which numbers this changes.
* ``reference``: attacks that really converge on a CPU, chosen by measurement (the convergence
  study, ``experiments/convergence.toml`` and ``results/convergence.md``): DLG's published 300
  L-BFGS steps; GS on the published width-64 ConvNet for 300 steps. FedAvg keeps the teaching scale's examples.
* ``paper``: the published budgets (DLG: 300 L-BFGS steps; GS: 24,000 signed-Adam steps on the
  width-64 ConvNet; FedAvg on whole datasets), meant for a GPU.

An attack's budget is its iteration count and the options of its published model at that scale
(GS's ConvNet width); FedAvg's is the number of training and test examples.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


@dataclass(frozen=True)
class AttackBudget:
    iterations: int
    model_options: Mapping = field(default_factory=dict)  # for the attack's published model only
    options: Mapping = field(default_factory=dict)  # other fields of the attack's settings at this scale


@dataclass(frozen=True)
class FedAvgBudget:
    train_examples: int | None  # None: the whole split
    test_examples: int | None


@dataclass(frozen=True)
class Scale:
    name: str
    purpose: str
    attacks: Mapping[str, AttackBudget]
    fedavg: FedAvgBudget


def _scale(name: str, purpose: str, attacks: dict, fedavg: FedAvgBudget) -> Scale:
    frozen = {k: AttackBudget(b.iterations, MappingProxyType(dict(b.model_options)), MappingProxyType(dict(b.options)))
              for k, b in attacks.items()}
    return Scale(name, purpose, MappingProxyType(frozen), fedavg)


SCALES: Mapping[str, Scale] = MappingProxyType({
    "teaching": _scale(
        "teaching", "notebooks and CI on 2 CPU cores",
        # GS: width 16 (1/16 of the published compute); 400 steps take about 15 s and gain 6 to 8 dB
        # of PSNR over the random start on CIFAR-10 test images.
        {"dlg": AttackBudget(100), "gs": AttackBudget(400, {"width": 16})},
        FedAvgBudget(6000, 2000)),
    "reference": _scale(
        "reference", "attacks near convergence on a CPU (chapter 5's first sweep, about 20 CPU-hours)",
        # Chosen by the convergence study (experiments/convergence.toml, results/convergence.md):
        # DLG's published 300 steps; GS on the published width 64, which reconstructs both datasets
        # (width 16 levels off below 20 dB at any budget), for 300 steps: median PSNR 38.9 dB on
        # MNIST and 23.5 dB on CIFAR-10 (500 steps: 39 and 25 dB at 1.6x the cost, which the
        # reference sweep's attacker battery cannot afford).
        {"dlg": AttackBudget(300), "gs": AttackBudget(300, {"width": 64})},
        FedAvgBudget(6000, 2000)),
    "paper": _scale(
        "paper", "the published budgets, for a GPU",
        {"dlg": AttackBudget(300), "gs": AttackBudget(24_000, {"width": 64})},
        FedAvgBudget(None, None)),
})

SCALE_VARIABLE = "SOTERIA_SCALE"


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown scale {name!r}; choose one of {list(SCALES)}") from None


def attack_budget(scale: str, attack: str) -> AttackBudget:
    budgets = get_scale(scale).attacks
    if attack not in budgets:
        raise ValueError(f"scale {scale!r} has no budget for attack {attack!r}; it has {sorted(budgets)}")
    return budgets[attack]


NOTEBOOK_SCALES = ("teaching", "paper")  # each notebook sets its own budgets for these two


def notebook_scale() -> str:
    """The scale the notebooks run at: ``$SOTERIA_SCALE``, ``teaching`` by default."""
    scale = os.environ.get(SCALE_VARIABLE, "teaching").strip() or "teaching"
    if scale not in NOTEBOOK_SCALES:
        raise ValueError(f"{SCALE_VARIABLE}={scale!r}; choose one of {list(NOTEBOOK_SCALES)}")
    return scale


# What one iteration of each attack is, and the published model its budget's options apply to.
STEP_NAMES = {"dlg": ("L-BFGS steps", "sigmoid LeNet"), "gs": ("signed-Adam steps", "ConvNet")}


def _attack_cell(attack: str, budget: AttackBudget) -> str:
    steps, model = STEP_NAMES.get(attack, ("iterations", "model"))
    options = "".join(f" {k} {v}" for k, v in budget.model_options.items())
    return f"{budget.iterations:,} {steps}{', ' + model + options if options else ''}"


def _examples(count: int | None) -> str:
    return "all" if count is None else f"up to {count:,}"


def scale_table() -> str:
    """The budgets of every scale as a Markdown table (the introduction prints it; a test checks
    that the printed one is this one)."""
    attacks = sorted({a for scale in SCALES.values() for a in scale.attacks})
    header = ["scale", "for", *(a.upper() for a in attacks), "FedAvg training / test examples"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for scale in SCALES.values():
        cells = [_attack_cell(a, scale.attacks[a]) if a in scale.attacks else "–" for a in attacks]
        fedavg = f"{_examples(scale.fedavg.train_examples)} / {_examples(scale.fedavg.test_examples)}"
        lines.append("| " + " | ".join([f"`{scale.name}`", scale.purpose, *cells, fedavg]) + " |")
    return "\n".join(lines)

