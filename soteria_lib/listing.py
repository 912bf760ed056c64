"""A function of the library shown on the page that teaches it, read from the library itself.

Every chapter shows the few lines of the rule it is about (Soteria's keep rule of chapter 4,
DLG's soft cross-entropy of chapter 2, ...) with ``show_source(keep_mask)``: the listing is
``inspect.getsource`` of the installed code, so the page and the code cannot drift apart. It is
displayed as a Markdown code block headed by the function's module, name and file, and can leave
out the docstring when the chapter's prose already says it.
"""
from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Listing:
    """The source of one function or class, with where it comes from."""

    qualname: str  # e.g. soteria_lib.defenses.soteria.keep_mask
    path: str  # the file, relative to the package's parent folder: soteria_lib/defenses/soteria.py
    line: int  # first line of the definition in that file
    code: str

    def _repr_markdown_(self) -> str:
        return f"`{self.qualname}` ({self.path}, line {self.line}):\n\n```python\n{self.code}\n```\n"

    def __str__(self) -> str:
        return f"# {self.qualname} ({self.path}, line {self.line})\n{self.code}"


def _without_docstring(code: str) -> str:
    """``code`` (one dedented definition) with its docstring's lines removed."""
    definition = ast.parse(code).body[0]
    body = definition.body
    if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)) or len(body) == 1:
        return code
    lines = code.splitlines()
    docstring = body[0]
    return "\n".join(lines[:docstring.lineno - 1] + lines[docstring.end_lineno:])


def show_source(obj, docstring: bool = True) -> Listing:
    """The source of the function or class ``obj`` as it is installed, for a notebook to display.

    ``docstring=False`` leaves the docstring out (a function whose body is only its docstring
    keeps it). Raises ``TypeError`` for anything that has no source of its own (a number, a
    built-in, an instance).
    """
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        raise TypeError(f"show_source needs a function or class of the library, got {type(obj).__name__}")
    lines, first = inspect.getsourcelines(obj)
    code = textwrap.dedent("".join(lines)).rstrip("\n")
    if not docstring:
        code = _without_docstring(code)
    module = inspect.getmodule(obj)
    package = sys.modules[module.__name__.partition(".")[0]]  # soteria_lib: paths are shown from its parent
    path = Path(inspect.getfile(obj)).resolve().relative_to(Path(package.__file__).resolve().parents[1])
    return Listing(f"{module.__name__}.{obj.__qualname__}", path.as_posix(), first, code)
