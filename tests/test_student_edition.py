"""The student edition (tools/student_edition.py): the committed notebooks that Colab, Binder and the
student site's download button give students carry every exercise, no solution and no MyST, and
are current with the chapters and the numbers of the built book."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from repo_tools import load_tool

ROOT = Path(__file__).resolve().parents[1]


edition = load_tool("student_edition")
CHAPTERS = edition.toc_notebooks()
REFERENCES = {
    "equations": {"eq-dlg": "2.2"},
    "numbered": {"ex-2-1": {"name": "Exercise", "number": "2.1"}, "fig-02-3": {"name": "Figure", "number": "2.3"},
                 "thm-a": {"name": "Theorem", "number": "7.1"}},
    "titles": {"book/notation": "Notation", "notebooks/01_gradient_leakage": "Gradient leakage"},
    "sections": {"sec-x": "A section"},
    "citations": {"sun2021soteria": {"label": "Sun et al., 2021", "authors": "Sun et al.", "year": "2021"},
                  "zhu2019dlg": {"label": "Zhu et al., 2019", "authors": "Zhu et al.", "year": "2019"}},
}
# what students must never see: a role, a directive fence, a labelled equation's label, a target
RAW_MYST = re.compile(r"\{[a-z]+(:[a-z]+)?\}`|^(`{3,}|:{3,})\{|\$\$\s*\([\w-]+\)|^\([\w-]+\)=", re.M)

EXERCISE = """Text before.

````{exercise}
:label: ex-2-1
Run this:
```python
attack(seed=0)
```
````

````{solution} ex-2-1
:class: dropdown
It diverges:
```python
print("no")
```
````

After."""


def _markdown(notebook: dict) -> str:
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown")


def test_strip_solutions_removes_the_solution_and_keeps_the_exercise():
    stripped = edition.strip_solutions(EXERCISE)
    assert "{solution}" not in stripped and "It diverges" not in stripped and 'print("no")' not in stripped
    assert stripped.startswith("Text before.") and stripped.endswith("After.")
    assert "````{exercise}\n:label: ex-2-1\nRun this:\n```python\nattack(seed=0)\n```\n````" in stripped


def test_plain_markdown_renders_roles_equations_and_directives():
    render = edition.PlainMarkdown(REFERENCES, "notebooks/02_dlg_attack")
    text = render(EXERCISE + """

(sec-x)=
See {eq}`eq-dlg`, {numref}`Figure %s <fig-02-3>`, {numref}`fig-02-3`, {doc}`../book/notation`,
{doc}`chapter 1 <01_gradient_leakage>`, {cite}`sun2021soteria,zhu2019dlg`, {cite:t}`sun2021soteria`,
{ref}`sec-x` and {prf:ref}`thm-a`.

$$
a = b
$$ (eq-dlg)

```{admonition} Scale
:class: note
Two lines
of text.
```

````{prf:theorem} A bound
:label: thm-a
It holds.
````

```{prf:proof}
Trivially.
```""")
    assert "**Exercise 2.1.**\n\nRun this:\n```python\nattack(seed=0)\n```" in text
    assert "It diverges" not in text and "(sec-x)=" not in text
    assert ("See (2.2), Figure 2.3, Figure 2.3, Notation,\nchapter 1, [Sun et al., 2021; Zhu et al., 2019], "
            "Sun et al. [2021],\nA section and Theorem 7.1.") in text
    assert "$$\na = b\n\\tag{2.2}\n$$" in text
    assert "> **Scale**\n>\n> Two lines\n> of text." in text
    assert "**Theorem 7.1 (A bound).**\n\nIt holds." in text and "*Proof.* Trivially." in text
    assert not RAW_MYST.search(text)


def test_plain_markdown_refuses_what_it_cannot_render():
    render = edition.PlainMarkdown(REFERENCES, "notebooks/02_dlg_attack")
    with pytest.raises(ValueError, match="role {term}"):
        render("a {term}`gradient`")
    with pytest.raises(ValueError, match="directive {figure}"):
        render("```{figure} a.png\n```")
    with pytest.raises(KeyError, match="'eq-new' is not among the built book's equations"):
        render("{eq}`eq-new`")


@pytest.mark.parametrize("docname", CHAPTERS)
def test_the_committed_student_notebook_is_current(docname):
    path = edition.STUDENT / "notebooks" / f"{Path(docname).name}.ipynb"
    assert path.is_file(), "run `.venv/bin/python tools/student_edition.py notebooks`"
    references = json.loads(edition.REFERENCES.read_text())
    expected = edition.student_notebook(json.loads((ROOT / f"{docname}.ipynb").read_text()), references, docname)
    assert json.loads(path.read_text()) == expected, \
        "the chapter changed: run `.venv/bin/python tools/student_edition.py notebooks` (after a new " \
        "label, `bash tools/book.sh --student`)"


@pytest.mark.parametrize("docname", CHAPTERS)
def test_a_student_notebook_has_every_exercise_no_solution_and_no_myst(docname):
    chapter = json.loads((ROOT / f"{docname}.ipynb").read_text())
    student = json.loads((edition.STUDENT / "notebooks" / f"{Path(docname).name}.ipynb").read_text())
    text = _markdown(student)
    exercises = len(re.findall(r"^`{3,}\{exercise\}", _markdown(chapter), re.M))
    assert exercises >= 3 and len(re.findall(r"^\*\*Exercise \d+\.\d+\.\*\*$", text, re.M)) == exercises
    assert not re.search(r"\{solution\}|Solution to", text)
    assert not RAW_MYST.search(text), RAW_MYST.search(text)
    code = [cell for cell in chapter["cells"] if cell["cell_type"] == "code"]
    assert [cell for cell in student["cells"] if cell["cell_type"] == "code"] == code  # same code, no outputs


def test_the_committed_numbers_are_those_of_the_built_book():
    doctrees = ROOT / "_build" / ".doctrees"
    if not (doctrees / "environment.pickle").is_file():
        if os.environ.get("SOTERIA_SITE_REQUIRED") == "1":
            pytest.fail("no built book in _build (SOTERIA_SITE_REQUIRED=1)")
        pytest.skip("no built book: run `bash tools/book.sh --student`")
    assert json.loads(edition.REFERENCES.read_text()) == edition.references_from_build(doctrees), \
        "the book's numbering changed: run `bash tools/book.sh --student` and commit student/"


def test_the_student_configuration_runs_nothing_and_launches_the_student_notebooks():
    config = edition.student_config(yaml.safe_load((ROOT / "_config.yml").read_text()))
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["repository"]["path_to_book"] == "student" == edition.STUDENT.name
    assert config["html"]["announcement"] == edition.BANNER
    assert all(Path(path).is_absolute() for path in config["sphinx"]["local_extensions"].values())


def test_the_student_site_serves_the_student_notebooks():
    site = edition.SITE
    if not (site / "index.html").is_file():
        if os.environ.get("SOTERIA_SITE_REQUIRED") == "1":
            pytest.fail(f"no student site at {site} (SOTERIA_SITE_REQUIRED=1)")
        pytest.skip("no student site: run `bash tools/book.sh --student`")
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    repository = url.removeprefix("https://github.com/")
    for docname in CHAPTERS:
        name = f"{Path(docname).name}.ipynb"
        assert (site / "_sources" / f"{docname}.ipynb").read_bytes() == (edition.STUDENT / "notebooks" / name).read_bytes()
        page = (site / f"{docname}.html").read_text()
        assert f"colab.research.google.com/github/{repository}/blob/" in page
        assert re.search(rf"colab\.research\.google\.com/github/{re.escape(repository)}/blob/[\w.-]+/student/{re.escape(docname)}\.ipynb", page)
        assert edition.BANNER.split(":")[0] in page
