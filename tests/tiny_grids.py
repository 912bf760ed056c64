"""The smallest sweep and study the command-line tests run: two cells (no defense, Soteria 40 %)
of a two-step DLG on the embedded photograph, and a two-step DLG study; no dataset needed."""

TWO_CELLS = """
scale = "teaching"
images = [-1]
seeds = [0]

[defenses]
none = true
soteria = [40]

[attacks.dlg]
datasets = ["mnist"]
max_iterations = 2
"""

STUDY = """
images = [-1]
seeds = [0]

[studies.dlg]
attack = "dlg"
datasets = ["mnist"]
max_iterations = 2
every = 1
"""


def with_seeds(grid: str, count: int) -> str:
    """``grid`` with seeds 0 .. count - 1."""
    return grid.replace("seeds = [0]", f"seeds = {list(range(count))}")
