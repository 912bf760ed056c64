"""Build hook: the wheel carries the committed results the book's chapters read.

Everything else about the package is declared in pyproject.toml. The patterns live in
soteria_lib/book_files.py (BUNDLED), read here without importing the package (which needs torch).
"""
import ast
import glob
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _module_constant(path: Path, name: str):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{name} is not assigned in {path}")


class BuildWithBookFiles(build_py):
    """build_py, then copy the BUNDLED files into soteria_lib/<PACKAGE_COPY> of the build."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout itself
            return
        module = Path("soteria_lib") / "book_files.py"
        target = Path(self.build_lib) / "soteria_lib" / _module_constant(module, "PACKAGE_COPY")
        for pattern in _module_constant(module, "BUNDLED"):
            for name in sorted(glob.glob(pattern)):
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(name, destination)


setup(cmdclass={"build_py": BuildWithBookFiles})
