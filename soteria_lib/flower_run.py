"""Running a Flower App as a Flower user does, and the record a run leaves behind (chapter 9).

The record (:class:`RunRecord`, written by the app's ServerApp): a folder
``<output-dir>/run-<run id>/`` holding ``result.json`` (the run config, the engine and the
per-round test accuracy and loss, rewritten after every round, ``"finished": true`` at the end,
and the telemetry switches as the server saw them) and, when a curious server watched,
``server.pt`` (every client update it recorded, read as a gradient, and what its attack rebuilt). A relative ``output-dir`` is taken from the folder the
SuperLink runs in; the ServerApp prints where it writes.

The run (:class:`LocalSuperLink`): Flower 1.42 runs an app through a SuperLink. This starts one
in simulation mode on 127.0.0.1, as its own process group, with a Flower home of its own (a
temporary folder whose ``config.toml`` names it ``soteria``), so the user's ``~/.flwr`` is
neither read nor changed, and runs ``flwr run APP soteria --stream`` with the run config's
overrides and the federation's size, then reads the record back. The SuperLink installs no
dependencies at run time (``--disable-runtime-dependency-installation``: the app runs in this
environment, and nothing is fetched), and every process inherits this one's environment, so
telemetry and usage statistics stay off (:mod:`soteria_lib.telemetry`). The same commands, typed
by hand, are in the README.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .attacks import Reconstruction
from .curious_server import Observation
from .files import write_atomic, write_json
from .telemetry import QUIET

CONNECTION = "soteria"  # the SuperLink connection's name in the Flower home's config.toml
RESULT, SERVER = "result.json", "server.pt"


class FlowerRunFailed(RuntimeError):
    """A Flower run did not finish; the message ends with the exception it logged (else its last lines)."""


class RunRecord:
    """The record of one run, written by the ServerApp as the run goes."""

    def __init__(self, folder: Path, header: dict):
        self.folder, self.header = folder, header

    @classmethod
    def for_run(cls, context, engine: str) -> "RunRecord":
        """The record folder of the run ``context`` belongs to (refused if it exists already)."""
        config = context.run_config
        folder = Path(str(config["output-dir"])).expanduser().resolve() / f"run-{context.run_id}"
        folder.mkdir(parents=True, exist_ok=False)
        print(f"the run's record: {folder}", flush=True)
        record = cls(folder, {"run_id": context.run_id, "engine": engine, "run_config": dict(config),
                              "telemetry": {name: os.environ.get(name) for name in QUIET}})
        record.write_history([])
        return record

    def write_history(self, history: list[dict]) -> None:
        write_json(self.folder / RESULT, {**self.header, "finished": False, "history": history})

    def finish(self, history: list[dict], strategy, **extra) -> None:
        """The final record: the history and, from a curious strategy, its updates and observations."""
        updates = [asdict(update) for update in getattr(strategy, "updates", [])]
        curious = getattr(strategy, "curious", None)
        observations = [{"round": o.round, "client": o.client, "steps": o.steps, "examples": o.examples,
                         "inputs": o.reconstruction.inputs.detach().cpu(),
                         "labels": o.reconstruction.labels.detach().cpu(),
                         "matching_loss": o.reconstruction.matching_loss,
                         "iterations": o.reconstruction.iterations} for o in (curious.observations if curious else [])]
        if updates or observations:
            write_atomic(self.folder / SERVER, lambda tmp: torch.save(
                {"updates": updates, "observations": observations}, tmp))
        write_json(self.folder / RESULT, {**self.header, **extra, "finished": True,
                                          "final_accuracy": history[-1]["accuracy"], "history": history})


@dataclass
class FlowerRun:
    """A run read back from its record: ``result`` (result.json), the recorded ``updates`` (dicts
    of :class:`~soteria_lib.curious_strategy.ClientUpdate`'s fields) and ``observations``."""

    result: dict
    updates: list[dict] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    log: str = ""

    @property
    def history(self) -> list[dict]:
        return self.result["history"]


def read_record(folder: Path, log: str = "") -> FlowerRun:
    """The run recorded in ``folder``; an unfinished run is :class:`FlowerRunFailed`."""
    result = json.loads((folder / RESULT).read_text())
    if not result.get("finished"):
        rounds = len(result["history"]) - 1  # round 0 is the initial model
        raise FlowerRunFailed(f"the Flower run stopped after {max(rounds, 0)} of {result['run_config']['rounds']} "
                              f"rounds ({_last_lines(log)})")
    server = torch.load(folder / SERVER, weights_only=True) if (folder / SERVER).exists() else {}
    observations = [Observation(o["round"], o["client"], o["steps"], o["examples"],
                                Reconstruction(o["inputs"], o["labels"], o["matching_loss"], o["iterations"]))
                    for o in server.get("observations", [])]
    return FlowerRun(result, server.get("updates", []), observations, log)


def _last_lines(log: str, count: int = 3) -> str:
    """The last exception the run logged (``ValueError: ...``), else its last lines."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log.splitlines()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception|Failed|Diverged|Missing)\b.*: ", line)]
    if errors:
        return errors[-1][-600:]
    return " | ".join([line for line in lines if line][-count:])[-600:] or "it printed nothing"


def _descendants(pid: int) -> list[int]:
    """The processes started, directly or not, by ``pid`` (read from /proc; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    raise ValueError(f"a run config value is a string, a number or a boolean, got {value!r}")


class LocalSuperLink:
    """A SuperLink in simulation mode on 127.0.0.1 for the duration of a ``with`` block;
    :meth:`run` runs apps on it. ``cpus``: the CPUs Ray gets (each client takes one)."""

    def __init__(self, cpus: int = 2, timeout: float = 60.0):
        self.cpus, self.timeout = cpus, timeout
        self.home = Path(tempfile.mkdtemp(prefix="soteria-flwr-"))
        self.port = _free_port()
        # Flower's commands beside this interpreter first: the SuperLink starts them by name
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "FLWR_HOME": str(self.home), "PATH": os.pathsep.join([bin_dir, os.environ["PATH"]]),
                    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}  # Ray's future default: our clients use no GPU
        self.process: subprocess.Popen | None = None

    def _command(self, name: str) -> str:
        found = shutil.which(name, path=self.env["PATH"])
        if found is None:
            raise FileNotFoundError(f"Flower's command {name!r} is not installed: pip install 'soteria-lib[flower]'")
        return found

    def __enter__(self) -> "LocalSuperLink":
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self.process = subprocess.Popen(
            [self._command("flower-superlink"), "--insecure", "--simulation",
             "--disable-runtime-dependency-installation", "--host", "127.0.0.1", "--port", str(self.port),
             "--database", str(self.home / "state.db")],
            env=self.env, cwd=self.home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise FlowerRunFailed(f"the SuperLink did not start on 127.0.0.1:{self.port}") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        """Stop the SuperLink and every process under it: the SuperExec and a simulation still
        running (an interrupted run) start sessions of their own, and the simulation starts Ray."""
        if self.process is not None and self.process.poll() is None:
            family = [self.process.pid, *_descendants(self.process.pid)]
            _signal(family, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            _signal(family + _descendants(self.process.pid), signal.SIGKILL)
            self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def run(self, app: str | Path, run_config: dict, supernodes: int, output: str | Path,
            timeout: float = 1800.0, verbose: bool = False) -> FlowerRun:
        """``flwr run APP`` with ``run_config`` overriding the app's config and ``supernodes``
        simulated nodes; the record goes under ``output``. Returns the run read back from it."""
        output = Path(output).expanduser().resolve()
        overrides = self.home / f"run-config-{time.monotonic_ns()}.toml"
        overrides.write_text("".join(f"{key} = {_toml_value(value)}\n"
                                     for key, value in {**run_config, "output-dir": str(output)}.items()))
        before = set(output.glob("run-*")) if output.exists() else set()
        federation = (f"num-supernodes={supernodes} client-resources-num-cpus=1 init-args-num-cpus={self.cpus} "
                      f"init-args-log-to-driver={'true' if verbose else 'false'}")
        command = [self._command("flwr"), "run", str(Path(app).resolve()), CONNECTION, "--stream",
                   "--run-config", str(overrides), "--federation-config", federation]
        done = subprocess.run(command, env=self.env, cwd=self.home, capture_output=True, text=True, timeout=timeout)
        log = done.stdout + done.stderr
        if verbose:
            print(log)
        if done.returncode != 0:
            raise FlowerRunFailed(f"flwr run exited with {done.returncode} ({_last_lines(log)})")
        records = sorted(set(output.glob("run-*")) - before)
        if len(records) != 1:
            raise FlowerRunFailed(f"the Flower run wrote no record under {output} ({_last_lines(log)})")
        return read_record(records[0], log)


def run_app(app: str | Path, run_config: dict, supernodes: int, output: str | Path, cpus: int = 2,
            verbose: bool = False) -> FlowerRun:
    """One run of ``app`` on a SuperLink started for it (see :class:`LocalSuperLink`)."""
    with LocalSuperLink(cpus) as link:
        return link.run(app, run_config, supernodes, output, verbose=verbose)
