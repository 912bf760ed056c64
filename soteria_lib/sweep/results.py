"""The results CSV: one row per finished reconstruction, appended whole, read back typed (chapter 5).

A row is written in one ``write`` call and flushed to disk before the next run is recorded, so
an interrupted sweep leaves only complete rows (an unterminated last line is ignored when read,
and dropped before the next sweep appends). The parameter columns (:data:`KEY_COLUMNS`) identify
a run: a sweep skips every run whose key is already in the file, and a summary refuses a file
that holds one twice (:meth:`Table.unique_rows`). Every row records where it was
made (device, torch version, CPU capability, threads): a row repeats bit for bit only there.
Rows from before those columns existed leave them empty (unknown).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..defenses import DefenseSetting
from ..files import append_whole, write_atomic
from ..metrics import is_diverged


class ResultsError(ValueError):
    """A results file that cannot be read or extended; the message is one line."""


def _bool(text: str) -> bool:
    try:
        return {"true": True, "false": False}[text.lower()]
    except KeyError:
        raise ValueError(f"not a boolean: {text!r}") from None


def optional_int(text: str) -> int | None:
    return int(text) if text else None


def optional_float(text: str) -> float | None:
    return float(text) if text else None


# Column -> parser of its CSV text. The first twelve and the model are the run's parameters (its resume key): the
# defense's settings are one JSON object (soteria_lib.defenses.DefenseSetting.to_json); the
# attacked model's state is "init" (the attack's published initialisation) or a FedAvg global
# model; ``local_steps`` is the number of SGD steps the shared update sums (1: one gradient).
COLUMNS = {
    "attack": str, "dataset": str, "scale": str, "max_iterations": int, "attacker": str,
    "attack_options": str, "defense": str, "defense_settings": str, "model_state": str, "local_steps": int,
    "target_id": int, "seed": int,
    "model": str, "model_options": str, "input_space": str, "model_seed": int, "dummy_seed": int, "defense_seed": optional_int,
    "effective_rate": optional_float,
    "label": int, "mse": float, "mse_normalized": float, "mse_trivial": optional_float, "psnr": float, "ssim": float,
    "label_accuracy": float, "matching_loss": float, "iterations": int, "stop_reason": str, "diverged": _bool,
    "seconds": float, "cpu_seconds": float, "attack_seconds": float,
    "device": str, "torch_version": str, "cpu_capability": str, "torch_threads": optional_int,
    "version": str, "commit": str, "finished_at": str,
}
KEY_COLUMNS = (*tuple(COLUMNS)[:12], "model", "model_options", "input_space")


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def canonical_json(options: dict) -> str:
    """A mapping as one compact JSON object with sorted keys: a results row's options columns."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def result_row(spec, metrics: dict, seconds: float, cpu_seconds: float, commit: str) -> dict:
    """A CSV row of ``spec`` (a :class:`~.specs.ReconstructionSpec`) from
    :func:`~soteria_lib.pipeline.run_reconstruction`'s metrics; ``seconds`` is
    the whole run's wall time, ``cpu_seconds`` its CPU time (what it costs on a core of its own).

    Seeds, as ``run_reconstruction`` derives them: the model is built right after
    ``torch.manual_seed(seed)``, the attack draws its dummy from a generator seeded with ``seed``,
    and a random defense draws from ``metrics["defense_seed"]`` (``seed + 1``).
    """
    mse = metrics["mse"] if math.isfinite(metrics["mse"]) else math.inf
    return {**spec.params(), "model": metrics["model"], "model_options": canonical_json(metrics["model_options"]),
            "input_space": metrics["input_space"],
            "model_seed": spec.seed, "dummy_seed": spec.seed, "defense_seed": metrics["defense_seed"],
            "effective_rate": metrics["effective_rate"], "label": metrics["label"],
            "mse": mse, "mse_normalized": metrics["mse_normalized"], "mse_trivial": metrics["mse_trivial"],
            "psnr": metrics["psnr"],
            "ssim": metrics["ssim"], "label_accuracy": float(metrics["label_correct"]),
            "matching_loss": metrics["matching_loss"], "iterations": metrics["iterations"],
            "stop_reason": metrics["stop_reason"],
            "diverged": is_diverged(mse), "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
            "attack_seconds": metrics["seconds"],
            "device": metrics["device"], "torch_version": metrics["torch_version"],
            "cpu_capability": metrics["cpu_capability"], "torch_threads": metrics["torch_threads"],
            "version": metrics["version"], "commit": commit,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def setting_of(row: dict) -> DefenseSetting:
    """The defense setting a parsed row (or a FedAvg record) stores."""
    return DefenseSetting.from_json(row["defense"], row["defense_settings"])


def _line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _complete_text(path: Path) -> str:
    """The file's text up to its last complete line."""
    text = path.read_text()
    return text if text.endswith("\n") or not text else text[: text.rfind("\n") + 1]


@dataclass(frozen=True)
class Table:
    """A CSV file of typed rows, appended one run at a time: ``columns`` maps each column to the
    parser of its text, and the ``key`` columns identify a run (a sweep skips runs already in the
    file)."""

    columns: dict
    key: tuple[str, ...]

    def run_key(self, params: dict) -> tuple:
        """The resume key of a run, from a spec's parameters or a parsed row alike."""
        return tuple(self.columns[c](format_value(params[c])) for c in self.key)

    def read_rows(self, path: str | Path) -> list[dict]:
        """Every complete row, typed; ``[]`` if the file does not exist."""
        path = Path(path)
        if not path.exists():
            return []
        reader = csv.DictReader(io.StringIO(_complete_text(path)))
        if reader.fieldnames != list(self.columns):
            raise ResultsError(f"{path} does not have the columns of this version; write to another file")
        try:
            return [{c: parse(row[c]) for c, parse in self.columns.items()} for row in reader]
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"{path} line {reader.line_num}: {exc}") from None

    def prepare(self, path: str | Path) -> set[tuple]:
        """Make ``path`` ready for appending (header written, any partial last line dropped, both
        atomically) and return the keys of the runs it already holds."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = {self.run_key(row) for row in self.read_rows(path)}
        if not path.exists():
            write_atomic(path, lambda tmp: Path(tmp).write_text(_line(list(self.columns))))
        elif not path.read_text().endswith("\n"):
            text = _complete_text(path)
            write_atomic(path, lambda tmp: Path(tmp).write_text(text))
        return keys

    def append_rows(self, path: str | Path, rows: list[dict]) -> None:
        """Append complete rows in one write and force them to disk; a full disk leaves none of them."""
        append_whole(Path(path), "".join(_line([format_value(row[c]) for c in self.columns]) for row in rows))

    def unique_rows(self, rows: list[dict], path: str | Path, keep_first: bool = False) -> list[dict]:
        """``rows`` (read from ``path``) if no run key appears twice. Duplicates (two sweeps that
        wrote one file) are a :class:`ResultsError` naming them, or with ``keep_first`` are
        dropped but for the first row of each key, the one written first."""
        first: dict[tuple, int] = {}
        repeated: dict[tuple, list[int]] = {}
        for index, row in enumerate(rows):
            key = self.run_key(row)
            if key in first:
                repeated.setdefault(key, [first[key]]).append(index)
            else:
                first[key] = index
        if repeated and not keep_first:
            named = "; ".join(f"{', '.join(f'{c}={v}' for c, v in zip(self.key, key))} on lines "
                              f"{', '.join(str(i + 2) for i in lines)}" for key, lines in list(repeated.items())[:2])
            more = f" and {len(repeated) - 2} more" if len(repeated) > 2 else ""
            raise ResultsError(f"{path} holds {len(repeated)} runs more than once (as two sweeps writing it at once "
                               f"leave it): {named}{more}; remove the repeated rows, or read the first of each with "
                               "--keep_first")
        return [row for index, row in enumerate(rows) if first[self.run_key(row)] == index]


RESULTS = Table(COLUMNS, KEY_COLUMNS)
run_key, read_rows, prepare = RESULTS.run_key, RESULTS.read_rows, RESULTS.prepare


def append_row(path: str | Path, row: dict) -> None:
    """Append one complete results row and force it to disk."""
    RESULTS.append_rows(path, [row])
