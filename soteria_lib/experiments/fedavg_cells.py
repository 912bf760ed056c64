"""FedAvg accuracy cells: one ``python -m soteria_lib.fedavg`` run per dataset and defense setting.

Each run lives in ``ROOT/<dataset>_<defense>_<value>/metrics.json``, where the value is ``p50``
for a pruning rate of 50 %, ``s0.01`` for noise 0.01 and ``none`` without a defense: the layout
the book's FedAvg chapter uses, so that a run made for one is reused by the other. A cell whose
``metrics.json`` exists and was written for the requested configuration is skipped; one written
for another configuration is an error (it is never overwritten).
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from .. import fedavg
from .grid import DEFENSE_PARAMETERS, DefenseSetting, FedAvgSpec, GridError

# How a setting's value appears in the folder name, by the Setup field it sets.
VALUE_TAGS = {None: lambda v: "none", "pruning_rate": lambda v: f"p{v:g}", "noise": lambda v: f"s{v:g}"}


def cell_dir(spec: FedAvgSpec) -> Path:
    setting = spec.setting
    return spec.output_root / f"{spec.dataset}_{setting.defense}_{VALUE_TAGS[setting.parameter](setting.value)}"


def fedavg_argv(spec: FedAvgSpec, device: str = "cpu", data_root: str | None = None) -> list[str]:
    setting = spec.setting
    argv = ["--dataset", spec.dataset, "--defense", setting.defense, "--scale", spec.scale,
            "--output", str(cell_dir(spec)), "--device", device, "--no_progress"]
    if setting.parameter:
        argv += [f"--{setting.parameter}", repr(setting.value)]
    if data_root:
        argv += ["--data_root", str(data_root)]
    for key, value in spec.options.items():
        argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return argv


def expected_config(spec: FedAvgSpec) -> dict:
    """The fields of ``metrics.json`` that identify the run, as ``soteria_lib.fedavg`` writes them."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = fedavg.build_parser().parse_args(fedavg_argv(spec))
    except SystemExit:
        raise GridError(f"fedavg.options: {errors.getvalue().strip().split('error: ')[-1]}") from None
    return {"clients": args.clients, "fraction": args.fraction, "rounds": args.rounds,
            "local_epochs": args.local_epochs, "batch_size": args.batch_size, "lr": args.lr,
            "iid": args.alpha is None, "alpha": args.alpha or 0.5, "seed": args.seed,
            "dataset": args.dataset, "model": args.model, "scale": args.scale, "defense": args.defense,
            "pruning_rate": args.pruning_rate, "noise": args.noise, "clip": args.clip}


def is_done(spec: FedAvgSpec) -> bool:
    """True when the cell's ``metrics.json`` holds this configuration; raises if it holds another."""
    expected = expected_config(spec)  # checks the options even when there is nothing to compare
    path = cell_dir(spec) / "metrics.json"
    if not path.exists():
        return False
    stored = json.loads(path.read_text())
    for key, value in expected.items():
        if stored.get(key) != value:
            raise GridError(f"{path} was written for {key} = {stored.get(key)!r}, the grid asks for {value!r}; "
                            "remove it or choose another FedAvg output folder")
    return True


def run_cell(spec: FedAvgSpec, device: str = "cpu", data_root: str | None = None) -> None:
    """Train the cell in this process (``soteria_lib.fedavg.main``); its chatter is swallowed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = fedavg.main(fedavg_argv(spec, device, data_root))
    if code != 0:
        raise RuntimeError(f"FedAvg {cell_dir(spec)} failed: {err.getvalue().strip()}")


def read_accuracies(root: str | Path) -> dict[tuple[str, DefenseSetting], dict]:
    """Every finished cell under ``root``: ``(dataset, setting) -> metrics.json`` (history dropped)."""
    cells = {}
    for path in sorted(Path(root).glob("*/metrics.json")):
        stored = json.loads(path.read_text())
        stored.pop("history", None)
        defense = stored.get("defense")
        if defense not in DEFENSE_PARAMETERS:
            continue  # a run made by hand with an alias: not a grid cell
        parameter = DEFENSE_PARAMETERS[defense][0]
        setting = DefenseSetting(defense, float(stored[parameter] or 0.0) if parameter else 0.0)
        cells[(stored["dataset"], setting)] = {**stored, "path": str(path)}
    return cells
