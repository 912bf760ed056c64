"""The runs a sweep is made of (chapter 5's evidence): a reconstruction, which becomes one row of
the results CSV, and a FedAvg accuracy cell, which writes its own folder. A grid file lists them
(:mod:`.grid`); each knows how to run itself (``run``), as a worker calls it (:mod:`.tasks`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks.battery import attacker_info
from ..defenses import DefenseSetting
from ..federated import FedAvgExperiment, run_experiment
from ..pipeline import Setup, run_reconstruction
from .results import canonical_json, result_row, setting_of


@dataclass(frozen=True)
class ReconstructionSpec:
    """One reconstruction run: one row of the results CSV."""

    attack: str
    dataset: str
    scale: str
    max_iterations: int
    attacker: str  # a name in soteria_lib.attacks.battery
    attack_options: dict = field(hash=False)
    setting: DefenseSetting
    target_id: int
    seed: int
    model_state: str = "init"  # or a FedAvg global model (soteria_lib.pipeline.Setup.model_state)
    local_steps: int = 1
    model: str | None = None  # None: the attack's published model at the scale
    model_options: dict = field(default_factory=dict, hash=False)
    model_file: str | None = field(default=None, compare=False)  # the FedAvg snapshot of model_state
    local_lr: float = 0.1
    input_space: str | None = None  # None: the attack's published input space

    def setup(self, device: str = "cpu", data_root: str | None = None) -> Setup:
        # the block's options override its attackers' (a tuning study varies an attacker's weight)
        options = {**attacker_info(self.attacker).options, **self.attack_options, "max_iterations": self.max_iterations}
        return Setup(attack=self.attack, dataset=self.dataset, target_id=self.target_id,
                     defense=self.setting.defense, defense_settings=self.setting.settings(), seed=self.seed,
                     scale=self.scale, device=device, data_root=data_root, attack_options=options,
                     model=self.model, model_options=dict(self.model_options), model_state=self.model_state,
                     model_file=self.model_file, local_steps=self.local_steps, local_lr=self.local_lr,
                     input_space=self.input_space)

    def describe(self) -> str:
        attacker = "" if self.attacker == "plain" else f" ({self.attacker})"
        state = "" if self.model_state == "init" else f" {self.model_state}"
        steps = "" if self.local_steps == 1 else f" {self.local_steps} steps"
        return (f"{self.attack}{attacker} {self.dataset} {self.setting.label()}{state}{steps} image {self.target_id} "
                f"seed {self.seed}")

    def group(self) -> tuple:
        """The runs that share one model and one private image (a sweep runs them one after another,
        so that Soteria's scores are computed once for all of them)."""
        return self.attack, self.dataset, self.scale, self.model_state, self.local_steps, self.target_id, self.seed

    def params(self) -> dict:
        """The parameters that identify the run, as the CSV stores them (its resume key)."""
        setup = self.setup()
        model, model_options = setup.model_spec()
        return {"attack": self.attack, "dataset": self.dataset, "scale": self.scale,
                "max_iterations": self.max_iterations, "attacker": self.attacker,
                "attack_options": canonical_json(self.attack_options), "defense": self.setting.defense,
                "defense_settings": self.setting.to_json(), "model_state": self.model_state,
                "local_steps": self.local_steps, "target_id": self.target_id, "seed": self.seed,
                "model": model, "model_options": canonical_json(model_options), "input_space": setup.space()}

    @classmethod
    def from_row(cls, row: dict) -> "ReconstructionSpec":
        """The run a parsed results row records, ready to be run again."""
        return cls(row["attack"], row["dataset"], row["scale"], row["max_iterations"], row["attacker"],
                   json.loads(row["attack_options"]), setting_of(row), row["target_id"], row["seed"],
                   row["model_state"], row["local_steps"], row["model"], json.loads(row["model_options"]),
                   input_space=row["input_space"])

    def row(self, device: str, data_root: str | None, commit: str) -> dict:
        """Run the reconstruction and return its CSV row; Ctrl-C stops it unrecorded."""
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run_reconstruction(self.setup(device, data_root), progress=False)
        if result.metrics["interrupted"]:  # the attack stopped on Ctrl-C: the sweep stops too, unrecorded
            raise KeyboardInterrupt
        return result_row(self, result.metrics, time.perf_counter() - start, time.process_time() - cpu_start, commit)

    def run(self, device: str, data_root: str | None, commit: str) -> list[dict]:
        """A worker's task (:func:`.tasks.run_task`): the run as its one CSV row."""
        return [self.row(device, data_root, commit)]


@dataclass(frozen=True)
class FedAvgSpec:
    """One FedAvg accuracy run at a defense setting and training seed; its folder is
    ``ROOT/<dataset>_<defense>_<tag>`` for seed 0 (``mnist_soteria_p50``, ``mnist_dp-gaussian_s0.01``,
    ``mnist_none_none``), with ``_seed<k>`` appended for seed k."""

    dataset: str
    setting: DefenseSetting
    scale: str
    output_root: Path
    options: dict = field(hash=False)
    seed: int = 0
    snapshots: tuple[int, ...] = field(default=(), compare=False)  # rounds whose global model attacks read

    def experiment(self) -> FedAvgExperiment:
        options = {**self.options, "seed": self.seed}
        return FedAvgExperiment.with_options(options, dataset=self.dataset, scale=self.scale,
                                             defense=self.setting.defense, defense_settings=self.setting.settings())

    def describe(self) -> str:
        return f"fedavg {self.dataset} {self.setting.label()} seed {self.seed}"

    def folder(self) -> Path:
        seed = f"_seed{self.seed}" if self.seed else ""
        return self.output_root / f"{self.dataset}_{self.setting.defense}_{self.setting.tag()}{seed}"

    def run(self, device: str, data_root: str | None, commit: str) -> list[dict]:
        """A worker's task: the cell, written into its own folder (no CSV rows). A diverged training
        is a result (recorded with the round it diverged in), not a failed run."""
        run_experiment(self.experiment(), self.folder(), device, data_root, progress=False, record_divergence=True,
                       snapshots=self.snapshots)
        return []
