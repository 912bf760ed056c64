"""The chapters as a Colab user runs them: a fresh virtual environment without soteria_lib, each
notebook copied alone into an empty folder and executed there, its set-up cell installing the
library from a wheel built from this checkout (no network: pip may not look at an index).

The fresh environment sees this environment's third-party packages (torch and the rest, as Colab
preinstalls them) through a folder of links that leaves out soteria_lib, so the wheel, and the
results it carries, are the only copy of the library the notebooks can find.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "soteria-colab"
SOURCE_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "LICENSE-TEXT", "soteria_lib",
                "experiments", "results", "flower_apps", "book")


def _tool():
    spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "tools" / "setup_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _setup_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text())["cells"]
    return [cell for cell in cells if "soteria-setup" in cell["metadata"].get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_setup_cell_for_the_configured_repository(path):
    cells = json.loads(path.read_text())["cells"]
    first_code = next(cell for cell in cells if cell["cell_type"] == "code")
    assert _setup_cells(path) == [first_code], "run tools/setup_cell.py"
    assert "".join(first_code["source"]) == _tool().setup_source(notebook=path.stem), "run tools/setup_cell.py"
    assert "remove-cell" in first_code["metadata"]["tags"]  # the static site does not show it


def test_the_setup_cell_names_the_repository_of_the_launch_buttons(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text("repository:\n  url: https://example.org/fork/soteria-book/\n  branch: teaching\n")
    assert 'git+https://example.org/fork/soteria-book@teaching"' in _tool().setup_source(config)


def test_the_setup_cell_fails_in_one_line_when_the_library_cannot_be_installed(tmp_path):
    source = _tool().setup_source()
    env = {**os.environ, "SOTERIA_LIB_SOURCE": str(tmp_path / "missing.whl"), "PIP_NO_INDEX": "1"}
    # -S (no site-packages) in an empty folder: soteria_lib is not found, the cell takes its install branch
    done = subprocess.run([sys.executable, "-S", "-c", source], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: could not install soteria-lib from ") and "missing.whl" in last


def test_binder_installs_the_library_at_the_pins_of_the_book():
    def pins(path):
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return dict(line.split("==") for line in lines if "==" in line)
    binder, book = pins(ROOT / "binder" / "requirements.txt"), pins(ROOT / "requirements.txt")
    assert binder and all(book.get(name) == version for name, version in binder.items())
    assert "." in (ROOT / "binder" / "requirements.txt").read_text().split()  # the library itself
    assert not {"jupyter-book", "pytest", "playwright"} & set(binder)


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A wheel of this checkout, and a fresh environment (with a kernel) that lacks soteria_lib."""
    base = tmp_path_factory.mktemp("colab")
    source = base / "source"
    source.mkdir()
    for name in SOURCE_FILES:  # build from a copy: the build leaves build/ behind
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "*.png"))
        else:
            shutil.copy2(origin, source / name)
    shutil.copy2(ROOT / "results" / "convergence.png", source / "results" / "convergence.png")
    shutil.copytree(ROOT / "results" / "figures", source / "results" / "figures", dirs_exist_ok=True)
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, timeout=300)
    wheel = next(wheels.glob("soteria_lib-*.whl"))

    env = base / "env"
    # no pip or setuptools of its own: those, too, come with the preinstalled packages
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=300)
    python = env / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # this environment's packages, without soteria_lib (its editable hook and metadata included)
    packages = base / "preinstalled"
    packages.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "soteria" not in entry.name.lower():
            (packages / entry.name).symlink_to(entry)
    (purelib / "preinstalled.pth").write_text(f"{packages}\n")
    # and their commands, as pip writes them where it installs a package (Flower's SuperLink starts
    # its own by name): bin/flwr, bin/flower-superlink, ... running the fresh environment's Python
    flower = [d for d in importlib.metadata.distributions() if d.metadata["Name"] == "flwr"]
    for entry in (e for d in flower for e in d.entry_points if e.group == "console_scripts"):
        script = env / "bin" / entry.name
        script.write_text(f"#!{python}\nimport sys\nfrom {entry.module} import {entry.attr}\n"
                          f"sys.exit({entry.attr}())\n")
        script.chmod(0o755)
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('soteria_lib'))"],
                           cwd=base, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None", "the fresh environment must not see this checkout's soteria_lib"

    kernels = base / "jupyter" / "kernels" / KERNEL
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like", "language": "python"}))
    return {"base": base, "wheel": wheel, "purelib": purelib}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_alone_in_an_empty_folder_with_only_the_wheel(path, colab, data_root, monkeypatch):
    folder = colab["base"] / path.stem
    folder.mkdir()
    book = nbformat.read(path, as_version=4)
    book.cells.append(nbformat.v4.new_code_cell(
        "import soteria_lib, soteria_lib.book_files as files\n"
        "from soteria_lib.chapter_times import load_timings\n"
        "print('library:', soteria_lib.__file__)\nprint('book files:', files.book_root())\n"
        "print('measured chapters:', len(load_timings()['chapters']))"))
    nbformat.write(book, folder / path.name)
    for name in ("PYTHONPATH", "SOTERIA_BOOK_ROOT", "SOTERIA_SCALE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTER_PATH", str(colab["base"] / "jupyter"))
    monkeypatch.setenv("SOTERIA_LIB_SOURCE", str(colab["wheel"]))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("SOTERIA_DATA", str(data_root))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    ran = NotebookClient(nbformat.read(folder / path.name, as_version=4), timeout=900, kernel_name=KERNEL,
                         resources={"metadata": {"path": str(folder)}}).execute()

    printed = "".join(output.get("text", "") for output in ran.cells[-1].outputs)
    installed = colab["purelib"] / "soteria_lib"
    assert f"library: {installed / '__init__.py'}" in printed
    assert f"book files: {installed / 'book_data'}" in printed
    assert f"measured chapters: {len(NOTEBOOKS)}" in printed  # the wheel carries book/timings.json
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".ipynb") == [path.name]
