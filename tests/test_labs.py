"""The graded labs (labs/, tools/labs.py): Otter Assign makes a student version without the
solutions or hidden tests, and Otter Run, locally and without Docker, gives the reference
solutions full marks and a deliberately wrong solution fewer, failing the test written for that
mistake."""
from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from repo_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


labs = load_tool("labs")
MASTERS = labs.masters()
# One typical mistake per lab: the answer cell defining NAME replaced by SOURCE must lose points on
# QUESTION, with the failure message of the test written for it, and nowhere else.
WRONG = {
    "lab1_matching_loss": ("l2_distance", "q1", "the *squared* distance", '''\
def l2_distance(dummy, shared):
    return sum(torch.linalg.vector_norm(d - s) for d, s in zip(dummy, shared))'''),
    "lab2_soteria_mask": ("keep_mask", "q2", "tied at the threshold must be kept", '''\
def keep_mask(scores, pruning_rate):
    return scores.abs() > torch.quantile(scores.double(), pruning_rate / 100).to(scores.dtype)'''),
    "lab3_mask_aware": ("visible_masks", "q1", "the mask is g != 0, not g > 0", '''\
def visible_masks(shared):
    return tuple(g > 0 for g in shared)'''),
    "lab4_dpsgd_step": ("clip_and_sum", "q1", "not tensor by tensor", '''\
def clip_and_sum(per_example, clip):
    clipped = []
    for g in per_example:
        norms = g.flatten(1).norm(dim=1)
        factors = torch.clamp(clip / norms, max=1.0)
        clipped.append((g * factors.view(-1, *([1] * (g.dim() - 1)))).sum(0))
    return tuple(clipped)'''),
}


def test_there_are_at_least_four_labs_each_with_a_wrong_solution():
    assert len(MASTERS) >= 4
    assert sorted(WRONG) == [master.stem for master in MASTERS]


@pytest.fixture(scope="module")
def assigned(tmp_path_factory):
    output = tmp_path_factory.mktemp("labs")
    return {master.stem: labs.assign(master, output) for master in MASTERS}


def _answer_cells(book) -> list:
    return [cell for cell in book.cells if "otter_answer_cell" in cell.metadata.get("tags", [])]


def _failed_messages(results: dict, question: str) -> list[str]:
    """The failure messages of the test cases of ``question`` that failed."""
    output = next(test["output"] for test in results["tests"] if test["name"] == question)
    messages = dict(re.findall(r"(q\d+ - \d+) message: (.*)", output))
    failed = re.findall(r"(q\d+ - \d+) result:\n\s*❌", output)
    return [messages.get(case, case) for case in failed]


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_the_student_version_has_blanks_and_no_hidden_test(master, assigned):
    student = assigned[master.stem] / "student" / master.name
    text = student.read_text()
    book = nbformat.read(student, as_version=4)
    answers = _answer_cells(book)
    assert len(answers) >= 2, "every lab has at least two questions"
    assert all(cell.source.rstrip().endswith("...") for cell in answers), "an answer cell is not blank"
    assert "BEGIN SOLUTION" not in text and "hidden: true" not in text
    for source in (cell.source for cell in nbformat.read(master, as_version=4).cells if cell.cell_type == "code"):
        if "hidden: true" in source:  # a hidden test's failure message never reaches the student
            message = yaml.safe_load(source.split('"""')[1].replace("# BEGIN TEST CONFIG", ""))["failure_message"]
            assert json.dumps(message)[1:-1] not in text
    checks = [cell.source for cell in book.cells if cell.source.startswith("grader.check(")]
    assert len(checks) == len(answers)


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_the_labs_install_the_library_from_the_configured_repository_and_otter_at_its_pin(master, assigned):
    student = nbformat.read(assigned[master.stem] / "student" / master.name, as_version=4)
    setup = [cell.source for cell in student.cells if "soteria-setup" in cell.metadata.get("tags", [])]
    tool = labs._setup_cell_tool()
    assert setup[0] == tool.setup_source()
    assert repr(labs.otter_requirement()) in setup[1] and f"otter.Notebook({master.name!r})" in setup[1]
    assert labs.otter_requirement() == f"otter-grader=={importlib.metadata.version('otter-grader')}"


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_the_reference_solutions_get_full_marks(master, assigned, tmp_path):
    reference = assigned[master.stem] / "autograder" / master.name
    results = labs.grade(assigned[master.stem], reference, tmp_path)
    scores = labs.scores(results)
    assert len(scores) >= 2 and all(max_score > 0 for _, max_score in scores.values())
    assert all(score == max_score for score, max_score in scores.values()), results


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_a_wrong_solution_fails_the_test_written_for_its_mistake(master, assigned, tmp_path):
    name, question, message, source = WRONG[master.stem]
    book = nbformat.read(assigned[master.stem] / "autograder" / master.name, as_version=4)
    cell = next(cell for cell in book.cells if cell.source.lstrip().startswith(f"def {name}("))
    cell.source = source
    submission = tmp_path / master.name
    nbformat.write(book, submission)

    results = labs.grade(assigned[master.stem], submission, tmp_path / "results")
    scores = labs.scores(results)
    score, max_score = scores.pop(question)
    assert score < max_score
    assert any(message in failed for failed in _failed_messages(results, question)), results
    assert all(score == max_score for score, max_score in scores.values()), "other questions lost points"
