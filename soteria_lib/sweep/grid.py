"""Grid files: the reconstructions and FedAvg runs a sweep is made of (chapter 5's evidence).

A grid is a TOML file (``experiments/teaching.toml`` is a commented example)::

    scale = "teaching"          # every attack's budget preset: "teaching", "reference" or "paper"
    images = [0, 1, 2]          # target ids; -1 is the embedded photograph (no dataset needed)
    seeds = [0, 1, 2]

    [defenses]                  # the settings shared by the reconstructions and the FedAvg runs
    none = true                 # the undefended baseline (a defense without a strength: true)
    soteria = [20, 40]          # strengths: pruning rate in percent ("ours" is an alias)
    prune = [20, 40]            # pruning rate in percent
    dp-gaussian = [1e-3, {sigma = 1e-2, clip = 1.0}]   # noise sigma, or a table of any settings
    dp-laplace = [1e-3]         # noise: Laplace scale b

    [attacks.dlg]               # a block; its name is the attack unless it sets attack = "dlg"
    datasets = ["mnist", "cifar10"]
    max_iterations = {mnist = 10, cifar10 = 30}   # or one integer; left out: the scale's budget
    attack_options = {}         # other fields of the attack's settings, e.g. GS's {batched = false};
                                # they override the attackers' own (a tuning study varies a weight)
    attackers = ["plain"]       # the battery (soteria_lib.attacks.battery), each against every
                                # defense it applies to; or a table {layer-dropping = ["soteria"]}
                                # naming the defenses (true: all it applies to)
    defenses = {soteria = [40]} # optional, like images and seeds: replace the grid's for this block

    [fedavg]                    # optional: test accuracy at the same defense settings
    datasets = ["mnist"]
    seeds = [0]                 # training seeds (default [0]); seed k > 0 adds _seed<k> to the folder
    defenses = {none = true}    # optional: other settings than [defenses] (same format)
    output = "results/fedavg"   # one folder per run, <dataset>_<defense>_<value>/metrics.json
    options = {}                # fields of FedAvgConfig, or model / model_options / input_space,
                                # e.g. {rounds = 5}; a value may be a table per dataset:
                                # {lr = {mnist = 0.1, cifar10 = 0.03}}

Every name and number is checked when the grid is loaded (the defenses against their
registrations, attack options by building the attack's settings, FedAvg options by building the
experiment); a mistake raises :class:`GridError` with a one-line message that names the key.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from ..attacks import ATTACKS, attack_info
from ..attacks.battery import ATTACKERS
from ..data import DATASETS
from ..defenses import DefenseSetting, defense_info, defense_names
from ..federated import TRAINING_OPTIONS, FedAvgConfig, snapshot_path
from ..limits import check_count, check_counts
from ..runtime import check_seed
from ..scales import SCALES
from .specs import FedAvgSpec, ReconstructionSpec
from .verdict import Plan, VerdictError

DEFAULT_FEDAVG_OUTPUT = "results/fedavg"


class GridError(ValueError):
    """A grid file that cannot be run; the message is one line."""


@dataclass
class Grid:
    reconstructions: list[ReconstructionSpec]
    fedavg: list[FedAvgSpec]
    fedavg_output: Path
    verdict: Plan | None = None  # the primary comparisons, fixed before the runs (soteria_lib.sweep.verdict)


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
    """``[defenses]``: per registered defense, ``true`` (its default settings: ``none = true``) or a
    list of settings, each a strength (a number: the registration's strength setting) or a table of
    any of its settings (``{sigma = 0.01, clip = 1.0}``)."""
    settings = []
    for name, values in table.items():
        try:
            info = defense_info(name)
        except ValueError:
            raise GridError(f"{where}: unknown defense {name!r}; choose from {defense_names()}") from None
        if isinstance(values, bool):
            if values:
                settings.append(DefenseSetting(info.name))
            continue
        if not _typed(values, (bool, list), f"{where}.{name}"):
            raise GridError(f"{where}.{name}: the list is empty")
        for value in values:
            settings.append(_setting(info, value, f"{where}.{name}"))
    if not settings:
        raise GridError(f"{where}: no defense setting")
    if len(set(settings)) != len(settings):
        raise GridError(f"{where}: a setting is listed twice")
    return settings


def _setting(info, value, where: str) -> DefenseSetting:
    """One entry of a defense's list: a strength or a table of settings."""
    if isinstance(value, dict):
        chosen = value
    elif info.strength is None:
        raise GridError(f"{where}: {info.name} has no strength; give true or tables of settings")
    else:
        number = float(_typed(value, (int, float), where))
        try:
            info.strength.check(number)
        except ValueError as exc:
            raise GridError(f"{where}: {exc}") from None
        chosen = {info.strength.setting: number}
    try:
        return DefenseSetting.of(info.name, **chosen)
    except (ValueError, TypeError) as exc:
        raise GridError(f"{where}: {exc}") from None


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
               "seeds", "model", "model_options", "model_states", "local_steps", "local_lr", "input_space"}
FEDAVG_KEYS = {"datasets", "defenses", "output", "options", "seeds"}
TOP_KEYS = {"scale", "images", "seeds", "defenses", "attacks", "fedavg", "verdict"}


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
        model, model_options, states, steps, lr, space = _protocol(options, where)
        specs += [ReconstructionSpec(attack, dataset, scale, budgets[dataset], attacker, attack_options,
                                     setting, image, seed, state, local, model, model_options, local_lr=lr,
                                     input_space=space)
                  for dataset in datasets for attacker, faced in against.items() for setting in faced
                  for state in states for local in steps for image in block_images for seed in block_seeds]
    keys = [tuple(s.params().items()) for s in specs]
    if len(set(keys)) != len(keys):
        raise GridError("attacks: two blocks list the same run")
    return specs


def _protocol(options: dict, where: str) -> tuple:
    """The attacked model and the client's round: ``model`` and ``model_options`` (default: the
    attack's published model at the scale), ``model_states`` (``init``, or ``round:K`` for the
    global model after round K of the FedAvg run of the same dataset, defense setting and seed),
    ``local_steps`` (a list; 1: the client shares one gradient) and their ``local_lr``, and the
    ``input_space`` the model reads (``pixels`` or ``normalized``; default: the attack's)."""
    model = _typed(options.get("model"), (str, type(None)), f"{where}.model")
    space = _typed(options.get("input_space"), (str, type(None)), f"{where}.input_space")
    if space not in (None, "pixels", "normalized"):
        raise GridError(f"{where}.input_space: {space!r} is neither 'pixels' nor 'normalized'")
    model_options = _typed(options.get("model_options", {}), dict, f"{where}.model_options")
    states = _typed(options.get("model_states", ["init"]), list, f"{where}.model_states")
    for state in _unique(states, f"{where}.model_states"):
        kind, _, rounds = _typed(state, str, f"{where}.model_states").partition(":")
        if not (state == "init" or kind == "round" and rounds.isdigit()):
            raise GridError(f"{where}.model_states: {state!r} is neither 'init' nor 'round:K'")
    steps = _int_list({"local_steps": options.get("local_steps", [1])}, "local_steps", where)
    if min(steps) < 1:
        raise GridError(f"{where}.local_steps: must be >= 1, got {min(steps)}")
    lr = float(_typed(options.get("local_lr", FedAvgConfig().lr), (int, float), f"{where}.local_lr"))
    if not lr > 0:
        raise GridError(f"{where}.local_lr: must be > 0, got {lr}")
    return model, model_options, states, steps, lr, space


def link_trained_models(reconstructions: list[ReconstructionSpec], fedavg: list[FedAvgSpec]) -> tuple[list, list]:
    """Give every run on a FedAvg global model (``round:K``) the file of the FedAvg cell of its
    dataset, defense setting and seed, and that cell the rounds to keep. The cell must train the
    attacked architecture (same model and model options)."""
    cells = {(f.dataset, f.setting, f.seed): f for f in fedavg}
    rounds: dict[tuple, set] = {}
    linked = []
    for spec in reconstructions:
        if spec.model_state == "init":
            linked.append(spec)
            continue
        cell = cells.get((spec.dataset, spec.setting, spec.seed))
        if cell is None:
            raise GridError(f"attacks: {spec.describe()} attacks {spec.model_state}, but [fedavg] has no cell of "
                            f"{spec.dataset}, {spec.setting.label()}, seed {spec.seed}")
        experiment, setup = cell.experiment(), spec.setup()
        attacked = (*setup.model_spec(), setup.space())
        trained = (experiment.model, {**TRAINING_OPTIONS.get(experiment.model, {}), **experiment.model_options},
                   experiment.input_space)
        if attacked != trained:
            raise GridError(f"attacks: {spec.describe()} attacks {attacked}, but its FedAvg cell trains {trained}")
        round_index = int(spec.model_state.split(":")[1])
        if round_index > experiment.training.rounds:
            raise GridError(f"attacks: {spec.model_state} is past the FedAvg cell's {experiment.training.rounds} rounds")
        rounds.setdefault(cell, set()).add(round_index)
        linked.append(replace(spec, model_file=str(snapshot_path(cell.folder(), round_index))))
    return linked, [replace(f, snapshots=tuple(sorted(rounds.get(f, ())))) for f in fedavg]


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
        applies = [s for s in settings if ATTACKERS[name].applies(s.info)]
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
    specs = [FedAvgSpec(d, s, scale, output, _for_dataset(options, d), seed)
             for d in datasets for s in settings for seed in seeds]
    for spec in specs:  # every option name and value, before anything runs
        try:
            spec.experiment()
        except (ValueError, TypeError) as exc:
            raise GridError(f"fedavg.options: {exc}") from None
    return specs


def _for_dataset(options: dict, dataset: str) -> dict:
    """FedAvg options with per-dataset tables (keys that are all dataset names) resolved."""
    resolved = {}
    for key, value in options.items():
        per_dataset = isinstance(value, dict) and value and set(value) <= set(DATASETS)
        if per_dataset and dataset not in value:
            raise GridError(f"fedavg.options.{key}: no value for dataset {dataset!r}")
        resolved[key] = value[dataset] if per_dataset else value
    return resolved


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
    reconstructions, fedavg = link_trained_models(reconstructions, fedavg)
    try:
        plan = Plan.from_table(_typed(table["verdict"], dict, "verdict")) if "verdict" in table else None
    except VerdictError as exc:
        raise GridError(str(exc)) from None
    return Grid(reconstructions, fedavg, output, plan)
