"""Migrate results files between the two layouts of a defense's settings (run once, kept for the record).

Layout 1 (until December 2026) stored a defense's settings as loose run options: the results CSV
had the columns ``pruning_rate`` and ``noise``, and a FedAvg cell's ``metrics.json`` the keys
``pruning_rate``, ``noise`` and ``clip``. Layout 2 stores them as data: one JSON object of the
defense's non-default settings (``defense_settings``, soteria_lib.defenses.DefenseSetting), and
the CSV gains the columns of the attacked model's state and input space (``model_state``,
``local_steps``, ``input_space``), the
defense's seed under its general name (``defense_seed``, was ``noise_seed``), the effective
pruning rate and the trivial guess's MSE, left empty in migrated rows (not measured then).

    python tools/migrate_results.py                 # every committed results file, to layout 2
    python tools/migrate_results.py --to 1 FILE...  # back to layout 1 (the round-trip test)

Files already in the target layout are left as they are; a file is rewritten atomically.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from soteria_lib.defenses import DefenseSetting, defense_info, from_flags
from soteria_lib.files import write_atomic

REPOSITORY = Path(__file__).resolve().parents[1]
V1_COLUMNS = [
    "attack", "dataset", "scale", "max_iterations", "attacker", "attack_options", "defense", "pruning_rate", "noise",
    "target_id", "seed", "model", "model_options", "model_seed", "dummy_seed", "noise_seed", "label", "mse",
    "mse_normalized", "psnr", "ssim", "label_accuracy", "matching_loss", "iterations", "stop_reason", "diverged",
    "seconds", "cpu_seconds", "attack_seconds", "device", "torch_version", "cpu_capability", "torch_threads",
    "version", "commit", "finished_at"]
V2_COLUMNS = [
    "attack", "dataset", "scale", "max_iterations", "attacker", "attack_options", "defense", "defense_settings",
    "model_state", "local_steps", "target_id", "seed", "model", "model_options", "input_space", "model_seed",
    "dummy_seed",
    "defense_seed", "effective_rate", "label", "mse", "mse_normalized", "mse_trivial", "psnr", "ssim",
    "label_accuracy", "matching_loss", "iterations", "stop_reason", "diverged", "seconds", "cpu_seconds",
    "attack_seconds", "device", "torch_version", "cpu_capability", "torch_threads", "version", "commit",
    "finished_at"]
NEW_EMPTY = {"effective_rate": "", "mse_trivial": ""}
NEW_DEFAULTS = {"model_state": "init", "local_steps": "1"}
PUBLISHED_SPACE = {"dlg": "pixels", "gs": "normalized"}  # the input space each attack's rows were run in


def settings_json(defense: str, pruning_rate, noise, clip=None) -> str:
    """Layout 1's options as layout 2's JSON object."""
    return DefenseSetting.of(defense, **from_flags(defense, pruning_rate=pruning_rate, noise=noise, clip=clip)).to_json()


def legacy_options(defense: str, settings: dict) -> dict:
    """Layout 2's settings as layout 1's options (``pruning_rate``, ``noise``, ``clip``; 0 / None when unset)."""
    flags = {setting: flag for flag, setting in defense_info(defense).flags.items()}
    unknown = sorted(set(settings) - {s for s, f in flags.items() if f in ("pruning_rate", "noise", "clip")})
    if unknown:
        raise ValueError(f"setting {unknown[0]!r} of {defense!r} has no place in layout 1")
    options = {"pruning_rate": 0.0, "noise": None, "clip": None}
    options.update({flags[k]: v for k, v in settings.items()})
    return options


def _csv_text(header: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[row[c] for c in header] for row in rows])
    return buffer.getvalue()


def csv_to_v2(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        settings = settings_json(row["defense"], float(row["pruning_rate"]), float(row["noise"]))
        out.append({**row, **NEW_EMPTY, **NEW_DEFAULTS, "defense_settings": settings, "defense_seed": row["noise_seed"],
                    "input_space": PUBLISHED_SPACE[row["attack"]]})
    return out


def csv_to_v1(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if any(row[k] != v for k, v in {**NEW_EMPTY, **NEW_DEFAULTS}.items()) or \
                row["input_space"] != PUBLISHED_SPACE[row["attack"]]:
            raise ValueError(f"a row of {row['attack']} {row['defense']} uses a column layout 1 does not have")
        options = legacy_options(row["defense"], json.loads(row["defense_settings"]))
        out.append({**row, "pruning_rate": repr(float(options["pruning_rate"])),
                    "noise": repr(float(options["noise"] or 0.0)), "noise_seed": row["defense_seed"]})
    return out


def migrate_csv(path: Path, to: int) -> bool:
    """Rewrite the results CSV ``path`` in layout ``to``; False when it already is (or is another table)."""
    text = path.read_text()
    reader = csv.DictReader(io.StringIO(text))
    source, target = (V1_COLUMNS, V2_COLUMNS) if to == 2 else (V2_COLUMNS, V1_COLUMNS)
    if reader.fieldnames != source:
        return False
    rows = (csv_to_v2 if to == 2 else csv_to_v1)(list(reader))
    new = _csv_text(target, rows)
    write_atomic(path, lambda tmp: Path(tmp).write_text(new))
    return True


def migrate_record(path: Path, to: int) -> bool:
    """Rewrite a FedAvg cell's ``metrics.json`` in layout ``to`` (key order kept)."""
    original = path.read_text()
    record = json.loads(original)
    if to == 2 and "pruning_rate" in record:
        settings = json.loads(settings_json(record["defense"], record["pruning_rate"], record["noise"], record["clip"]))
        new = {}
        for key, value in record.items():
            if key == "pruning_rate":
                new["defense_settings"] = settings
            elif key not in ("noise", "clip"):
                new[key] = value
    elif to == 1 and "defense_settings" in record:
        options = legacy_options(record["defense"], record["defense_settings"])
        new = {}
        for key, value in record.items():
            new.update(options if key == "defense_settings" else {key: value})
    else:
        return False
    text = json.dumps(new, indent=2) + ("\n" if original.endswith("\n") else "")  # the oldest cells end without
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    return True


# What the migration of issue 25 rewrote: the results tables and FedAvg cells committed in layout 1.
# Files written since (results/tuning.csv, results/verdict.csv, ...) were born in layout 2, and may
# use columns that layout 1 cannot hold.
MIGRATED_TABLES = ("reference.csv", "teaching.csv")
MIGRATED_CELLS = ("fedavg", "fedavg-reference")


def committed_files() -> list[Path]:
    """The results CSVs and FedAvg cells under results/ that the migration rewrote."""
    results = REPOSITORY / "results"
    return [results / name for name in MIGRATED_TABLES] + sorted(
        path for folder in MIGRATED_CELLS for path in (results / folder).glob("*/metrics.json"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Migrate results files between layouts 1 and 2.")
    parser.add_argument("files", nargs="*", type=Path, help="default: every results file under results/")
    parser.add_argument("--to", type=int, choices=[1, 2], default=2)
    args = parser.parse_args(argv)
    for path in args.files or committed_files():
        changed = (migrate_csv if path.suffix == ".csv" else migrate_record)(path, args.to)
        print(f"{'migrated' if changed else 'left as is'}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
