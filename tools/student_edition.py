"""The student edition: the book without the exercises' solutions, as a site and as notebooks.

    bash tools/book.sh --student          # the book, then this edition (what CI runs)
    .venv/bin/python tools/student_edition.py site        # this edition, from an existing build
    .venv/bin/python tools/student_edition.py notebooks   # only refresh student/notebooks/

*The site* (``_build/student/html``) is the same book built from copies of its sources whose
``{solution}`` directives are removed: the chapters are the notebooks the main build executed
(``_build/jupyter_execute``), built again with execution off, so the two editions show the same
outputs and the student edition costs no second run. Every page carries a banner naming the
edition, and its launch buttons open the student notebooks.

*The notebooks* (``student/notebooks/``, committed, because Colab and Binder open notebooks from
the repository) are the chapters without solutions and without MyST, so that Jupyter, Colab and
Binder show them as the site does: roles become the text the site shows (``{eq}`` gives "(2.1)",
``{numref}`` "Figure 2.3", ``{cite}`` "[Sun et al., 2021]", ``{doc}`` the page's title),
a labelled display equation gets its number as ``\\tag``, exercises and theorems become bold
numbered headings and admonitions block quotes. The numbers come from the built book (its
Sphinx environment), kept in ``student/references.json``, so that the notebooks can be refreshed
after an edit without a build; a build refreshes both, and the tests check that the committed
copies are current. The student site's download button serves the same notebooks.
"""
from __future__ import annotations

import json
import pickle
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
STUDENT_BUILD = BUILD / "student"
SITE = STUDENT_BUILD / "html"
STUDENT = ROOT / "student"  # committed: what Colab and Binder open
REFERENCES = STUDENT / "references.json"
BANNER = ("Student edition: the exercises are here, their solutions are not. "
          "The notebooks you download or open in Colab or Binder carry none either.")

_OPENING = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<argument>.*)$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$")
_ROLE = re.compile(r"\{(?P<name>[a-z]+(?::[a-z]+)?)\}`(?P<body>[^`]*)`")
_LABELLED_MATH = re.compile(r"\$\$(?P<math>.+?)\$\$[ \t]*\((?P<label>[\w:.-]+)\)", re.S)
_TARGET = re.compile(r"^\([\w:.-]+\)=[ \t]*$")
_EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.S)
THEOREM_LIKE = {"theorem", "lemma", "definition", "corollary", "proposition", "remark", "example",
                "conjecture", "observation", "property", "axiom", "criterion", "assumption", "algorithm"}
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error", "seealso"}


# --- directives -------------------------------------------------------------------------------

def _directives(text: str, render) -> str:
    """``text`` with every MyST directive replaced by ``render(name, argument, options, body)``
    (a string, or None to keep the directive as it is); bodies are processed first."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        opening = _OPENING.match(lines[i])
        if not opening:
            out.append(lines[i])
            i += 1
            continue
        fence, start = opening["fence"], i + 1
        options = {}
        while start < len(lines) and (option := _OPTION.match(lines[start])):
            options[option["key"]] = option["value"].strip()
            start += 1
        end = next((k for k in range(start, len(lines)) if lines[k].strip() == fence), None)
        if end is None:
            raise ValueError(f"unclosed directive {lines[i]!r}")
        body = _directives("\n".join(lines[start:end]), render)
        rendered = render(opening["name"], opening["argument"].strip(), options, body)
        if rendered is None:
            out.extend([lines[i], *lines[i + 1:start], body, lines[end]])
        else:
            out.append(rendered)
        i = end + 1
    return "\n".join(out)


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def strip_solutions(markdown: str) -> str:
    """MyST ``markdown`` without its ``{solution}`` directives; everything else unchanged."""
    if "{solution}" not in markdown:
        return markdown
    return _tidy(_directives(markdown, lambda name, *_: "" if name == "solution" else None))


# --- plain Markdown ---------------------------------------------------------------------------

class PlainMarkdown:
    """Renders MyST Markdown of one page (``docname``, e.g. ``notebooks/02_dlg_attack``) as plain
    Markdown with the numbers and titles of ``references`` (see :func:`references_from_build`)."""

    def __init__(self, references: dict, docname: str):
        self.references, self.docname = references, docname

    def __call__(self, markdown: str) -> str:
        text = _directives(markdown, self._directive)
        text = _LABELLED_MATH.sub(self._tagged, text)
        text = "\n".join(line for line in text.split("\n") if not _TARGET.match(line))
        return _tidy(_ROLE.sub(self._role, text))

    def _lookup(self, table: str, key: str) -> str | dict:
        try:
            return self.references[table][key]
        except KeyError:
            raise KeyError(f"{self.docname}: {key!r} is not among the built book's {table} "
                           f"({REFERENCES.relative_to(ROOT)}): rebuild with `bash tools/book.sh --student`") from None

    def _tagged(self, match) -> str:
        return f"$${match['math'].rstrip()}\n\\tag{{{self._lookup('equations', match['label'])}}}\n$$"

    def _numbered(self, label: str) -> str:
        entry = self._lookup("numbered", label)
        return f"{entry['name']} {entry['number']}"

    def _directive(self, name: str, argument: str, options: dict, body: str) -> str:
        kind = name.removeprefix("prf:")
        if name == "solution":
            return ""
        if name == "exercise" or (name.startswith("prf:") and kind in THEOREM_LIKE):
            heading = self._numbered(options["label"]) if "label" in options else kind.capitalize()
            heading += f" ({argument})" if argument else ""
            return f"**{heading}.**\n\n{body.strip()}\n"
        if name == "prf:proof":
            return f"*Proof.* {body.strip()} $\\blacksquare$\n"
        if name == "admonition" or name in ADMONITIONS:
            title = argument if name == "admonition" else name.capitalize()
            quoted = "\n".join(f"> {line}".rstrip() for line in body.strip().split("\n"))
            return f"> **{title}**\n>\n{quoted}\n"
        if name == "math":
            tag = f"\n\\tag{{{self._lookup('equations', options['label'])}}}" if "label" in options else ""
            return f"$$\n{body.strip()}{tag}\n$$"
        raise ValueError(f"{self.docname}: no plain-Markdown rendering for the directive {{{name}}}")

    def _role(self, match) -> str:
        name, body = match["name"], match["body"]
        explicit = _EXPLICIT.match(body)
        title, target = (explicit["title"], explicit["target"]) if explicit else (None, body)
        if name == "eq":
            return f"({self._lookup('equations', target)})"
        if name in ("numref", "prf:ref"):
            entry = self._lookup("numbered", target)
            if title:
                return title.replace("%s", entry["number"]).replace("{number}", entry["number"])
            return f"{entry['name']} {entry['number']}"
        if name == "doc":
            return title or self._lookup("titles", self._resolve(target))
        if name == "ref":
            return title or self._lookup("sections", target)
        if name in ("cite", "cite:p", "cite:t"):
            entries = [self._lookup("citations", key.strip()) for key in target.split(",")]
            if name == "cite:t":
                return ", ".join(f"{entry['authors']} [{entry['year']}]" for entry in entries)
            return "[" + "; ".join(entry["label"] for entry in entries) + "]"
        raise ValueError(f"{self.docname}: no plain-Markdown rendering for the role {{{name}}}")

    def _resolve(self, target: str) -> str:
        target = target.removesuffix(".md").removesuffix(".ipynb")
        if target.startswith("/"):
            return target.lstrip("/")
        return posixpath.normpath(posixpath.join(posixpath.dirname(self.docname), target))


def student_notebook(notebook: dict, references: dict, docname: str) -> dict:
    """A chapter (notebook JSON without outputs) as students get it: no solutions, plain Markdown."""
    render = PlainMarkdown(references, docname)
    cells = []
    for cell in notebook["cells"]:
        cell = json.loads(json.dumps(cell))
        if cell["cell_type"] == "markdown":
            text = render("".join(cell["source"]))
            if not text.strip():
                continue
            cell["source"] = [line + "\n" for line in text.split("\n")[:-1]] + [text.split("\n")[-1]]
        cells.append(cell)
    return {**notebook, "cells": cells}


# --- the numbers and titles of a built book ---------------------------------------------------

def references_from_build(doctrees: Path) -> dict:
    """Equation numbers, numbered labels (figures, exercises, theorems), page titles, section
    titles and citation labels of the book whose Sphinx environment is in ``doctrees``."""
    with open(doctrees / "environment.pickle", "rb") as handle:
        env = pickle.load(handle)
    names = {"figure": "Figure", "table": "Table", "code-block": "Listing"}
    equations, numbered = {}, {}
    for figtypes in env.toc_fignumbers.values():
        for figtype, found in figtypes.items():
            for node_id, number in found.items():
                number = ".".join(map(str, number))
                if figtype == "displaymath":
                    equations[node_id.removeprefix("equation-")] = number
                else:  # node ids of figures, exercises and theorems are their labels
                    numbered[node_id] = {"name": names.get(figtype, figtype.capitalize()), "number": number}
    sections = {label: str(title) for label, (docname, _, title) in env.domaindata["std"]["labels"].items()
                if title and docname in env.titles}
    titles = {docname: title.astext() for docname, title in env.titles.items()}
    citations = {}
    for citation in env.domaindata["cite"]["citations"]:
        label = citation.formatted_entry.label  # "Sun et al., 2021" (tools/bib_style.py)
        authors, year = label.rsplit(", ", 1)
        citations[citation.key] = {"label": label, "authors": authors, "year": year}
    return {"equations": dict(sorted(equations.items())), "numbered": dict(sorted(numbered.items())),
            "titles": dict(sorted(titles.items())), "sections": dict(sorted(sections.items())),
            "citations": dict(sorted(citations.items()))}


def toc_notebooks(root: Path = ROOT) -> list[str]:
    """The docnames of the chapters of ``_toc.yml`` that are notebooks."""
    text = (root / "_toc.yml").read_text()
    files = re.findall(r"file:\s*(\S+)", text)
    return [name.removesuffix(".ipynb") for name in files if (root / f"{name.removesuffix('.ipynb')}.ipynb").is_file()]


def write_notebooks(references: dict, target: Path | None = None) -> list[Path]:
    """Write every chapter's student notebook into ``target`` (``student/notebooks``); returns the
    files that changed."""
    target = target or STUDENT / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    changed = []
    for docname in toc_notebooks():
        source = json.loads((ROOT / f"{docname}.ipynb").read_text())
        text = json.dumps(student_notebook(source, references, docname), indent=1, ensure_ascii=False) + "\n"
        path = target / f"{Path(docname).name}.ipynb"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def student_config(config: dict) -> dict:
    """The book's ``_config.yml`` for the student edition, built from a copy in another folder:
    no execution, a banner, launch buttons that open ``student/``, absolute local paths."""
    config = json.loads(json.dumps(config))
    config["title"] = f"{config['title']} (student edition)"
    config["execute"]["execute_notebooks"] = "off"
    config.setdefault("html", {})["announcement"] = BANNER
    config["repository"]["path_to_book"] = STUDENT.name
    sphinx = config["sphinx"]
    sphinx["local_extensions"] = {name: str(ROOT / path) for name, path in sphinx["local_extensions"].items()}
    sphinx["config"]["html_static_path"] = [str(ROOT / path) for path in sphinx["config"]["html_static_path"]]
    return config


INCLUDE = re.compile(r"^```\{include\}\s+(\S+)", re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def copy_included(source: Path) -> None:
    """Copy into ``source`` the files that the book's pages include from outside ``book/`` (the
    results appendix includes ``results/reference_summary.md``) and the images those files show."""
    for page in sorted((ROOT / "book").glob("*.md")):
        for target in INCLUDE.findall(page.read_text()):
            included = (page.parent / target).resolve()
            files = [included] + [(included.parent / image).resolve() for image in IMAGE.findall(included.read_text())
                                  if "://" not in image]
            for path in files:
                copy = source / path.relative_to(ROOT)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)


def build_site() -> Path:
    """Build the student edition into ``_build/student/html`` from the main build in ``_build``;
    refresh ``student/``. Returns the site's index.html."""
    executed = BUILD / "jupyter_execute"
    if not (BUILD / "html" / "index.html").is_file() or not executed.is_dir():
        raise FileNotFoundError("no built book in _build: run `bash tools/book.sh` first")
    references = references_from_build(BUILD / ".doctrees")
    STUDENT.mkdir(exist_ok=True)
    REFERENCES.write_text(json.dumps(references, indent=1, ensure_ascii=False) + "\n")
    write_notebooks(references)

    source = STUDENT_BUILD / "src"
    shutil.rmtree(STUDENT_BUILD, ignore_errors=True)
    source.mkdir(parents=True)
    shutil.copy2(ROOT / "_toc.yml", source / "_toc.yml")
    shutil.copytree(ROOT / "book", source / "book")
    copy_included(source)
    config = student_config(yaml.safe_load((ROOT / "_config.yml").read_text()))
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    for docname in toc_notebooks():
        book = json.loads((executed / f"{docname}.ipynb").read_text())
        for cell in book["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = strip_solutions("".join(cell["source"]))
        (source / docname).parent.mkdir(parents=True, exist_ok=True)
        (source / f"{docname}.ipynb").write_text(json.dumps(book, ensure_ascii=False))

    subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(source),
                    "--path-output", str(STUDENT_BUILD), "--all", "-W", "-n", "--keep-going"], check=True)
    shutil.move(STUDENT_BUILD / "_build" / "html", SITE)
    for docname in toc_notebooks():  # the download button serves the student notebooks
        shutil.copy2(STUDENT / "notebooks" / f"{Path(docname).name}.ipynb", SITE / "_sources" / f"{docname}.ipynb")
    return SITE / "index.html"


def main(argv: list[str]) -> int:
    if argv == ["site"]:
        try:
            print(build_site())
        except (FileNotFoundError, subprocess.CalledProcessError) as error:
            print(f"student_edition.py: {error}", file=sys.stderr)
            return 1
        return 0
    if argv == ["notebooks"]:
        if not REFERENCES.is_file():
            print(f"student_edition.py: {REFERENCES} is missing: run `bash tools/book.sh --student`", file=sys.stderr)
            return 2
        try:
            changed = write_notebooks(json.loads(REFERENCES.read_text()))
        except (KeyError, ValueError) as error:
            print(f"student_edition.py: {error.args[0]}", file=sys.stderr)
            return 1
        print(f"student notebooks written; changed: {', '.join(p.name for p in changed) or 'none'}")
        return 0
    print("usage: tools/student_edition.py site|notebooks", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
