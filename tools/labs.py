"""The graded labs: student and autograder versions of every master notebook in labs/, made by
Otter Assign, and local grading of a submission with Otter Run (no Docker).

    .venv/bin/python tools/labs.py                   # assign every lab into _build/labs/
    .venv/bin/python tools/labs.py grade LAB NOTEBOOK  # grade one submission, print its score

A master notebook (``labs/labN_*.ipynb``) holds the questions, the reference solutions between
``# BEGIN SOLUTION`` / ``# END SOLUTION`` and the tests, public and hidden, in Otter's format
(https://otter-grader.readthedocs.io). Before assigning, this tool adds the set-up cell of the book's
chapters (tools/setup_cell.py: installs soteria-lib from the configured repository where it is
missing) and a cell that installs otter-grader at the pin of requirements.txt and starts the grader,
so the labs run in Colab or anywhere a student opens them. For each lab it writes

    _build/labs/LAB/student/LAB.ipynb        blanks and public tests: give this to students
    _build/labs/LAB/autograder/LAB.ipynb     the reference solutions
    _build/labs/LAB/autograder/LAB-autograder_*.zip   every test, hidden ones included: keep it

and grades with ``otter run -a ZIP NOTEBOOK``, which executes the notebook in a local kernel and
writes ``results.json``. The book's page on the labs (book/labs.md) explains their use.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LABS = ROOT / "labs"
OUTPUT = ROOT / "_build" / "labs"
OTTER = Path(sys.executable).with_name("otter")

GRADER_CELL = '''\
# This lab also needs otter-grader (at the book's pin) to check your answers.
OTTER = {requirement!r}
if importlib.util.find_spec("otter") is None:
    print(f"installing {{OTTER}} ...")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-color", OTTER],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        reason = (pip.stderr.strip().splitlines() or ["pip gave no reason"])[-1]
        raise RuntimeError(f"could not install {{OTTER}} ({{reason}})")
    importlib.invalidate_caches()

import otter

grader = otter.Notebook({notebook!r})'''


def _setup_cell_tool():
    spec = importlib.util.spec_from_file_location("setup_cell", ROOT / "tools" / "setup_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def otter_requirement(requirements: Path = ROOT / "requirements.txt") -> str:
    """``otter-grader==X`` as pinned in requirements.txt."""
    for line in requirements.read_text().splitlines():
        if line.split("#")[0].strip().startswith("otter-grader=="):
            return line.split("#")[0].strip()
    raise LookupError(f"otter-grader is not pinned in {requirements}")


def masters() -> list[Path]:
    return sorted(LABS.glob("lab*.ipynb"))


def with_setup_cells(master: Path) -> nbformat.NotebookNode:
    """The master notebook with the set-up and grader cells after its title cell."""
    book = nbformat.read(master, as_version=4)
    title = next(i for i, cell in enumerate(book.cells) if cell.cell_type == "markdown")
    cells = [_setup_cell_tool().setup_source(),
             GRADER_CELL.format(requirement=otter_requirement(), notebook=master.name)]
    for offset, source in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source)
        cell.id = f"setup-{offset}"
        cell.metadata["tags"] = ["soteria-setup"]
        book.cells.insert(title + offset, cell)
    return book


def assign(master: Path, output: Path = OUTPUT, run_tests: bool = False) -> Path:
    """Otter Assign ``master`` into ``output/<lab>/`` (student/ and autograder/); returns that folder.

    ``run_tests`` also runs the tests against the reference solutions (Otter's own check)."""
    target = output / master.stem
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / master.name
        nbformat.write(with_setup_cells(master), copy)
        command = [str(OTTER), "assign", "--no-pdfs", *([] if run_tests else ["--no-run-tests"]),
                   str(copy), str(target)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=scratch)
    if done.returncode != 0:
        raise RuntimeError(f"otter assign {master.name} failed:\n{done.stdout}{done.stderr}")
    return target


def autograder_zip(assigned: Path) -> Path:
    return next((assigned / "autograder").glob("*-autograder_*.zip"))


def grade(assigned: Path, notebook: Path, output: Path) -> dict:
    """Grade ``notebook`` with the autograder of the lab assigned in ``assigned`` (Otter Run,
    locally, no Docker); returns Otter's results.json: per question its score, max_score and the
    output of every test case."""
    output.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(OTTER), "run", "--no-logo", "-a", str(autograder_zip(assigned)),
                           "-o", str(output), str(notebook)], capture_output=True, text=True)
    results = output / "results.json"
    if done.returncode != 0 or not results.is_file():
        raise RuntimeError(f"otter run {notebook.name} failed:\n{done.stdout}{done.stderr}")
    return json.loads(results.read_text())


def scores(results: dict) -> dict[str, tuple[float, float]]:
    """``{question: (score, max_score)}`` of Otter's results.json."""
    return {test["name"]: (test["score"], test["max_score"])
            for test in results["tests"] if "max_score" in test}


def main(argv: list[str]) -> int:
    if argv[:1] == ["grade"]:
        if len(argv) != 3:
            print("usage: tools/labs.py grade LAB NOTEBOOK", file=sys.stderr)
            return 2
        lab, notebook = argv[1], Path(argv[2])
        if not (OUTPUT / lab / "autograder").is_dir() or not notebook.is_file():
            print(f"labs.py: no assigned lab {lab} in {OUTPUT} (run tools/labs.py) or no notebook {notebook}",
                  file=sys.stderr)
            return 2
        results = grade(OUTPUT / lab, notebook, Path(tempfile.mkdtemp(prefix="otter-")))
        for test in results["tests"]:
            print(test["output"])
        total = sum(score for score, _ in scores(results).values())
        print(f"{notebook.name}: {total:g} / {sum(top for _, top in scores(results).values()):g}")
        return 0
    if argv:
        print("usage: tools/labs.py [grade LAB NOTEBOOK]", file=sys.stderr)
        return 2
    for master in masters():
        target = assign(master)
        print(f"{master.stem}: {target / 'student' / master.name} (students), "
              f"{autograder_zip(target).relative_to(ROOT)} (grader)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
