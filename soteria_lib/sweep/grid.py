"""Grid files: the reconstructions and FedAvg runs a sweep is made of (chapter 5's evidence).

A grid is a TOML file (``experiments/teaching.toml`` is a commented example)::

    scale = "teaching"          # every attack's budget preset: "teaching", "reference" or "paper"
    images = [0, 1, 2]          # target ids; -1 is the embedded photograph (no dataset needed)
    seeds = [0, 1, 2]

    [defenses]                  # the settings shared by the reconstructions and the FedAvg runs
    none = true                 # the undefended baseline
    soteria = [20, 40]          # pruning rate in percent ("ours" is an alias)
    prune = [20, 40]            # pruning rate in percent
    dp-gaussian = [1e-3]        # noise: sigma
    dp-laplace = [1e-3]         # noise: Laplace scale b

    [attacks.dlg]               # a block; its name is the attack unless it sets attack = "dlg"
    datasets = ["mnist", "cifar10"]
    max_iterations = {mnist = 10, cifar10 = 30}   # or one integer; left out: the scale's budget
    attack_options = {}         # other fields of the attack's settings, e.g. GS's {batched = false}
    attackers = ["plain"]       # the battery (soteria_lib.attacks.battery), each against every
                                # defense it applies to; or a table {layer-dropping = ["soteria"]}
                                # naming the defenses (true: all it applies to)
    defenses = {soteria = [40]} # optional, like images and seeds: replace the grid's for this block

    [fedavg]                    # optional: test accuracy at the same defense settings
    datasets = ["mnist"]
    seeds = [0]                 # training seeds (default [0]); seed k > 0 adds _seed<k> to the folder
    defenses = {none = true}    # optional: other settings than [defenses] (same format)
    output = "results/fedavg"   # one folder per run, <dataset>_<defense>_<value>/metrics.json
    options = {}                # fields of FedAvgConfig, or model / clip, e.g. {rounds = 5}

Every name and number is checked when the grid is loaded (the defenses against their
registrations, attack options by building the attack's settings, FedAvg options by building the
experiment); a mistake raises :class:`GridError` with a one-line message that names the key.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks import ATTACKS, attack_info
from ..attacks.battery import ATTACKER_OPTIONS, ATTACKERS, attacker_info
from ..data import DATASETS
from ..defenses import DefenseSetting, defense_info, defense_names
from ..federated import FedAvgExperiment
from ..limits import check_count, check_counts
from ..pipeline import Setup
from ..runtime import check_seed
from ..scales import SCALES

DEFAULT_FEDAVG_OUTPUT = "results/fedavg"


class GridError(ValueError):
    """A grid file that cannot be run; the message is one line."""


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

    def setup(self, device: str = "cpu", data_root: str | None = None) -> Setup:
        options = {**self.attack_options, **attacker_info(self.attacker).options,
                   "max_iterations": self.max_iterations}
        return Setup(attack=self.attack, dataset=self.dataset, target_id=self.target_id,
                     defense=self.setting.defense, seed=self.seed, scale=self.scale, device=device,
                     data_root=data_root, attack_options=options, **self.setting.run_options())

    def describe(self) -> str:
        attacker = "" if self.attacker == "plain" else f" ({self.attacker})"
        return f"{self.attack}{attacker} {self.dataset} {self.setting.label()} image {self.target_id} seed {self.seed}"

    def group(self) -> tuple:
        """The runs that share one model and one private image (a sweep runs them one after another,
        so that Soteria's scores are computed once for all of them)."""
        return self.attack, self.dataset, self.scale, self.target_id, self.seed

    def params(self) -> dict:
        """The parameters that identify the run, as the CSV stores them (its resume key)."""
        return {"attack": self.attack, "dataset": self.dataset, "scale": self.scale,
                "max_iterations": self.max_iterations, "attacker": self.attacker,
                "attack_options": canonical_json(self.attack_options), "defense": self.setting.defense,
                **self.setting.run_options(), "target_id": self.target_id, "seed": self.seed}


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

    def experiment(self) -> FedAvgExperiment:
        options = {**self.options, "seed": self.seed}
        return FedAvgExperiment.with_options(options, dataset=self.dataset, scale=self.scale,
                                             defense=self.setting.defense,
                                             pruning_rate=self.setting.run_options()["pruning_rate"],
                                             noise=self.setting.value if self.setting.parameter == "noise" else None)

    def describe(self) -> str:
        return f"fedavg {self.dataset} {self.setting.label()} seed {self.seed}"

    def folder(self) -> Path:
        seed = f"_seed{self.seed}" if self.seed else ""
        return self.output_root / f"{self.dataset}_{self.setting.defense}_{self.setting.tag()}{seed}"


@dataclass
class Grid:
    reconstructions: list[ReconstructionSpec]
    fedavg: list[FedAvgSpec]
    fedavg_output: Path


def canonical_json(options: dict) -> str:
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def _require(table: dict, key: str, kind, where: str):
    if key not in table:
        raise GridError(f"{where}: missing key {key!r}")
    return _typed(table[key], kind, f"{where}.{key}")


def _typed(value, kind, where: str):
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise GridError(f"{where}: expected {names}, got {value!r}")
    return value


def _count(name: str, value, where: str) -> int:
    """A count within :data:`soteria_lib.limits.LIMITS`, else a :class:`GridError` naming ``where``."""
    try:
        return check_count(name, value, where)
    except ValueError as exc:
        raise GridError(str(exc)) from None


def _unique(values: list, where: str) -> list:
    if not values:
        raise GridError(f"{where}: the list is empty")
    if len(set(values)) != len(values):
        raise GridError(f"{where}: a value is listed twice")
    return values


def _int_list(table: dict, key: str, where: str) -> list[int]:
    values = _require(table, key, list, where)
    return _unique([_typed(v, int, f"{where}.{key}") for v in values], f"{where}.{key}")


def _images(table: dict, where: str) -> list[int]:
    images = _int_list(table, "images", where)
    if min(images) < -1:
        raise GridError(f"{where}.images: target ids are -1 (embedded photograph) or >= 0, got {min(images)}")
    return images


def check_seeds(seeds: list[int], where: str) -> list[int]:
    """Every seed in [0, 2**32 - 1], else a :class:`GridError` that names ``where``."""
    for seed in seeds:
        try:
            check_seed(seed)
        except ValueError as exc:
            raise GridError(f"{where}: {exc}") from None
    return seeds


def _seeds(table: dict, where: str) -> list[int]:
    return check_seeds(_int_list(table, "seeds", where), f"{where}.seeds")


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise GridError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")


def _names(table: dict, key: str, known, where: str) -> list[str]:
    names = [_typed(n, str, f"{where}.{key}") for n in _require(table, key, list, where)]
    for name in _unique(names, f"{where}.{key}"):
        if name not in known:
            raise GridError(f"{where}.{key}: unknown name {name!r}; choose from {sorted(known)}")
    return names


def parse_defenses(table: dict, where: str = "defenses") -> list[DefenseSetting]:
    """``[defenses]``: ``none = true`` and lists of strengths for the others (any registered
    defense; one without a strength takes ``true``)."""
    settings = []
    for name, values in table.items():
        try:
            info = defense_info(name)
        except ValueError:
            raise GridError(f"{where}: unknown defense {name!r}; choose from {defense_names()}") from None
        if info.strength is None:
            if _typed(values, bool, f"{where}.{name}"):
                settings.append(DefenseSetting(info.name))
            continue
        if not _typed(values, list, f"{where}.{name}"):
            raise GridError(f"{where}.{name}: the list is empty")
        for value in values:
            value = float(_typed(value, (int, float), f"{where}.{name}"))
            try:
                info.strength.check(value)
            except ValueError as exc:
                raise GridError(f"{where}.{name}: {exc}") from None
            settings.append(DefenseSetting(info.name, value))
    if not settings:
        raise GridError(f"{where}: no defense setting")
    if len(set(settings)) != len(settings):
        raise GridError(f"{where}: a setting is listed twice")
    return settings


def _iterations(value, datasets: list[str], scale_budget: int, where: str) -> dict[str, int]:
    """``max_iterations``: one integer, a table per dataset, or absent (the scale's budget)."""
    if value is None:
        return {d: scale_budget for d in datasets}
    per_dataset = value if isinstance(value, dict) else {d: value for d in datasets}
    budgets = {}
    for dataset in datasets:
        if dataset not in per_dataset:
            raise GridError(f"{where}.max_iterations: no budget for dataset {dataset!r}")
        budgets[dataset] = _count("max_iterations", per_dataset[dataset], f"{where}.max_iterations.{dataset}")
    return budgets


ATTACK_KEYS = {"attack", "datasets", "max_iterations", "attack_options", "attackers", "defenses", "images",
               "seeds"}
FEDAVG_KEYS = {"datasets", "defenses", "output", "options", "seeds"}
TOP_KEYS = {"scale", "images", "seeds", "defenses", "attacks", "fedavg"}


def parse_attacks(table: dict, scale: str, images, seeds, settings) -> list[ReconstructionSpec]:
    """``[attacks.<name>]`` blocks. A block's name is its attack unless it sets ``attack``; its
    ``defenses``, ``images`` and ``seeds`` replace the grid's, so one grid can run a battery of
    attackers on a few settings and the plain attacker on the rest."""
    specs = []
    for block, options in _typed(table, dict, "attacks").items():
        where = f"attacks.{block}"
        _check_keys(_typed(options, dict, where), ATTACK_KEYS, where)
        attack = _typed(options.get("attack", block), str, f"{where}.attack")
        if attack not in ATTACKS:
            raise GridError(f"{where}: unknown attack {attack!r}; choose from {sorted(ATTACKS)}")
        datasets = _names(options, "datasets", DATASETS, where)
        if attack not in SCALES[scale].attacks:
            raise GridError(f"scale: {scale!r} has no budget for {attack}")
        budgets = _iterations(options.get("max_iterations"), datasets, SCALES[scale].attacks[attack].iterations,
                              where)
        attack_options = _typed(options.get("attack_options", {}), dict, f"{where}.attack_options")
        if "max_iterations" in attack_options:
            raise GridError(f"{where}.attack_options: set 'max_iterations' as a key of {where} itself")
        reserved = sorted(ATTACKER_OPTIONS & set(attack_options))
        if reserved:
            raise GridError(f"{where}.attack_options: {reserved[0]!r} belongs to an attacker; list it in "
                            f"{where}.attackers")
        try:
            check_counts(attack_options)
            for budget in set(budgets.values()):
                attack_info(attack).configure(**attack_options, max_iterations=budget)
        except (ValueError, TypeError) as exc:
            raise GridError(f"{where}.attack_options: {exc}") from None
        chosen = (parse_defenses(_typed(options["defenses"], dict, f"{where}.defenses"), f"{where}.defenses")
                  if "defenses" in options else settings)
        block_images = _images(options, where) if "images" in options else images
        block_seeds = _seeds(options, where) if "seeds" in options else seeds
        against = parse_attackers(options.get("attackers", ["plain"]), chosen, f"{where}.attackers")
        specs += [ReconstructionSpec(attack, dataset, scale, budgets[dataset], attacker, attack_options,
                                     setting, image, seed)
                  for dataset in datasets for attacker, faced in against.items() for setting in faced
                  for image in block_images for seed in block_seeds]
    keys = [tuple(s.params().items()) for s in specs]
    if len(set(keys)) != len(keys):
        raise GridError("attacks: two blocks list the same run")
    return specs


def parse_attackers(value, settings: list[DefenseSetting], where: str) -> dict[str, list[DefenseSetting]]:
    """``attackers``: a list of attacker names, or a table naming, per attacker, the defenses it
    faces (``true``: all it applies to). Returns each attacker's defense settings."""
    table = ({name: True for name in _names({"attackers": value}, "attackers", ATTACKERS, where.rsplit(".", 1)[0])}
             if isinstance(value, list) else _typed(value, dict, where))
    if not table:
        raise GridError(f"{where}: no attacker")
    against = {}
    for name, chosen in table.items():
        if name not in ATTACKERS:
            raise GridError(f"{where}: unknown attacker {name!r}; choose from {list(ATTACKERS)}")
        applies = [s for s in settings if ATTACKERS[name].applies(s.defense)]
        if chosen is True:
            against[name] = applies
            continue
        names = _names({name: chosen}, name, {s.defense for s in applies}, where)
        against[name] = [s for s in applies if s.defense in names]
    return against


def parse_fedavg(table: dict, scale: str, settings, output: Path) -> list[FedAvgSpec]:
    _check_keys(_typed(table, dict, "fedavg"), FEDAVG_KEYS, "fedavg")
    datasets = _names(table, "datasets", DATASETS, "fedavg")
    options = _typed(table.get("options", {}), dict, "fedavg.options")
    if "seed" in options:
        raise GridError("fedavg.options: list training seeds in fedavg.seeds")
    seeds = _seeds(table, "fedavg") if "seeds" in table else [0]
    if "defenses" in table:  # a subset, when the slowest FedAvg runs (Soteria) would not fit the budget
        settings = parse_defenses(_typed(table["defenses"], dict, "fedavg.defenses"))
    specs = [FedAvgSpec(d, s, scale, output, options, seed) for d in datasets for s in settings for seed in seeds]
    for spec in specs:  # every option name and value, before anything runs
        try:
            spec.experiment()
        except (ValueError, TypeError) as exc:
            raise GridError(f"fedavg.options: {exc}") from None
    return specs


def load_grid(path: str | Path, fedavg_output: str | Path | None = None) -> Grid:
    """Read and check a grid file; ``fedavg_output`` overrides its ``[fedavg] output``."""
    path = Path(path)
    if path.is_dir():
        raise GridError(f"grid file {path} is a folder")
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(f"grid file {path} does not exist") from None
    except OSError as exc:
        raise GridError(f"grid file {path} cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GridError(f"{path} is not valid TOML: {exc}") from None
    _check_keys(table, TOP_KEYS, str(path))
    scale = _require(table, "scale", str, "grid")
    if scale not in SCALES:
        raise GridError(f"grid.scale: unknown scale {scale!r}; choose from {list(SCALES)}")
    images, seeds = _images(table, "grid"), _seeds(table, "grid")
    settings = parse_defenses(_require(table, "defenses", dict, "grid"))
    reconstructions = parse_attacks(_require(table, "attacks", dict, "grid"), scale, images, seeds, settings)
    fedavg_table = table.get("fedavg")
    if fedavg_table is not None:
        _typed(fedavg_table, dict, "fedavg")
    output = Path(fedavg_output or _typed((fedavg_table or {}).get("output", DEFAULT_FEDAVG_OUTPUT), str,
                                          "fedavg.output"))
    fedavg = parse_fedavg(fedavg_table, scale, settings, output) if fedavg_table is not None else []
    return Grid(reconstructions, fedavg, output)
