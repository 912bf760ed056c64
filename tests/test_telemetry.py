"""Quiet by default: no entry point of the project starts with Flower's telemetry, Flower's update
check or Ray's usage statistics on (soteria_lib.telemetry).

Each entry point runs in a fresh interpreter whose environment lacks the switches, as on a user's
machine; the test reads what the process then has, and what Flower and Ray decide from it."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from soteria_lib.book_files import book_file
from soteria_lib.telemetry import QUIET, quiet_by_default

COMMAND_LINES = ["soteria_lib.reconstruct", "soteria_lib.fedavg", "soteria_lib.experiments"]
APP_MODULES = [("federation", "federation_app.server_app"), ("federation", "federation_app.client_app"),
               ("stock", "stock_app.server_app"), ("stock", "stock_app.client_app")]


def _run(code: str, cwd=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in QUIET}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


REPORT = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {sorted(QUIET)!r}}}))"


@pytest.mark.parametrize("module", COMMAND_LINES)
def test_every_command_line_runs_with_telemetry_and_usage_statistics_off(module):
    seen = _run(f"""
        import runpy, sys
        sys.argv = ["{module}", "--help"]
        try:
            runpy.run_module("{module}", run_name="__main__")
        except SystemExit:
            pass
        {REPORT}""")
    assert seen == QUIET


def test_flower_and_ray_decide_to_send_nothing_once_the_library_is_imported():
    pytest.importorskip("flwr", reason="the flower extra is not installed")
    seen = _run("""
        import json
        import soteria_lib.flower, soteria_lib.sweep.cluster
        import flwr.supercore.telemetry as telemetry
        from ray._common.usage.usage_lib import usage_stats_enabled
        print(json.dumps({"flower": telemetry.FLWR_TELEMETRY_ENABLED, "ray": usage_stats_enabled()}))""")
    assert seen == {"flower": "0", "ray": False}


@pytest.mark.parametrize("app, module", APP_MODULES)
def test_every_flower_app_module_imports_with_telemetry_off(app, module):
    """The app's modules, imported as `flwr run` imports them to check the app (the simulation
    inherits the environment of the SuperLink, which soteria_lib.flower_run starts quiet)."""
    pytest.importorskip("flwr", reason="the flower extra is not installed")
    seen = _run(f"""
        import importlib, json, os
        importlib.import_module("{module}")
        import flwr.supercore.telemetry as telemetry
        switches = {{k: os.environ.get(k) for k in {sorted(QUIET)!r}}}
        print(json.dumps({{"flower": telemetry.FLWR_TELEMETRY_ENABLED, **switches}}))""",
                cwd=book_file("flower_apps", app))
    assert seen == {"flower": "0", **QUIET}


def test_the_local_superlink_and_all_it_starts_inherit_the_quiet_environment(monkeypatch):
    pytest.importorskip("flwr", reason="the flower extra is not installed")
    from soteria_lib.flower_run import LocalSuperLink

    for name in QUIET:
        monkeypatch.delenv(name, raising=False)
    quiet_by_default()  # what importing soteria_lib did in a fresh process
    link = LocalSuperLink()
    try:
        assert {k: link.env[k] for k in QUIET} == QUIET
    finally:
        link.__exit__(None, None, None)


def test_a_switch_set_on_purpose_is_left_as_it_is():
    environ = {"RAY_USAGE_STATS_ENABLED": "1"}
    assert quiet_by_default(environ) == {**QUIET, "RAY_USAGE_STATS_ENABLED": "1"}
