"""Write the set-up cell into every notebook, from the repository named in _config.yml.

    .venv/bin/python tools/setup_cell.py          # after changing repository.url or branch

The cell is each notebook's first code cell, right after the chapter's title, so that the cells
after it (the scale and run-time box first) can import the library. Outside a checkout
(Colab, Binder, a copied notebook) it installs soteria-lib, whose wheel carries the results the
chapters read; where the library is installed it does nothing. The launch buttons and this cell
thus name one repository; tests/test_colab.py checks that every notebook holds this exact cell.
"""
from __future__ import annotations

import json
import sys
import tomllib
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TAG = "soteria-setup"

TEMPLATE = '''\
# Set-up for Colab, Binder or a notebook copied out of the repository: install soteria-lib (its
# wheel carries the results the chapters read) unless it is installed. In a checkout: nothing.
import importlib.util
import os
import subprocess
import sys

SOURCE = os.environ.get("SOTERIA_LIB_SOURCE", "git+{url}@{branch}")  # a pip requirement or path
if importlib.util.find_spec("soteria_lib") is None:
    print(f"installing soteria-lib from {{SOURCE}} ...")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-color", SOURCE],
                         capture_output=True, text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
    if pip.returncode != 0:
        reason = (pip.stderr.strip().splitlines() or ["pip gave no reason"])[-1]
        raise RuntimeError(f"could not install soteria-lib from {{SOURCE}} ({{reason}}); "
                           "without a network, pip-install it from a copy and run this cell again")
    importlib.invalidate_caches()'''


# Chapters that need an optional extra of pyproject.toml: {notebook stem: (extra, module it provides)}.
EXTRAS = {"09_flower_federation": ("flower", "flwr")}

EXTRA_TEMPLATE = '''
# This chapter also needs the library's "{extra}" extra, in the range pyproject.toml gives.
EXTRA = {requirements!r}
if importlib.util.find_spec("{module}") is None:
    print(f"installing {{' '.join(EXTRA)}} ...")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-color", *EXTRA],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        reason = (pip.stderr.strip().splitlines() or ["pip gave no reason"])[-1]
        raise RuntimeError(f"could not install {{' '.join(EXTRA)}} ({{reason}})")
    importlib.invalidate_caches()'''


def setup_source(config: Path = ROOT / "_config.yml", notebook: str | None = None) -> str:
    """The cell's code for the repository and branch of the book's configuration; for a chapter
    in :data:`EXTRAS`, followed by the install of its extra's requirements."""
    repository = yaml.safe_load(config.read_text())["repository"]
    source = TEMPLATE.format(url=repository["url"].rstrip("/"), branch=repository.get("branch", "main"))
    if notebook in EXTRAS:
        extra, module = EXTRAS[notebook]
        pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
        source += EXTRA_TEMPLATE.format(extra=extra, requirements=list(pins), module=module)
    return source


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [line + "\n" for line in parts[:-1]] + [parts[-1]]


def write_cell(notebook: Path, source: str) -> bool:
    """Put the set-up cell right after the title cell of ``notebook``; True when the file changed."""
    before = notebook.read_text()
    book = json.loads(before)
    cells = [cell for cell in book["cells"] if TAG not in cell["metadata"].get("tags", [])]
    old = next((cell for cell in book["cells"] if TAG in cell["metadata"].get("tags", [])), None)
    cells.insert(1, {
        "cell_type": "code", "execution_count": None, "id": old["id"] if old else uuid.uuid4().hex[:8],
        "metadata": {"tags": ["remove-cell", TAG]}, "outputs": [], "source": _lines(source)})
    book["cells"] = cells
    after = json.dumps(book, indent=1, ensure_ascii=False) + "\n"
    notebook.write_text(after)
    return after != before


def main() -> int:
    changed = [path.name for path in sorted((ROOT / "notebooks").glob("*.ipynb"))
               if write_cell(path, setup_source(notebook=path.stem))]
    print(f"set-up cell written; changed: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
