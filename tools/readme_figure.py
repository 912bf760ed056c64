"""The README's picture: DLG on one MNIST digit against no defense, against Soteria at 60 %, and
as the mask-aware attacker against Soteria at 60 % (chapters 2, 4 and 8 in one row).

    SOTERIA_DATA=../shared/data .venv/bin/python tools/readme_figure.py    # writes results/readme_panel.png

It runs the library's command line (``python -m soteria_lib.reconstruct ... --save_image``) three
times, first MNIST training digit, model seed 1, teaching scale, and lays the three PNGs it writes
(private digit | reconstruction) side by side with the PSNR of each run. A few minutes on 2 cores.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "results" / "readme_panel.png"
COMMON = ["--attack", "dlg", "--dataset", "mnist", "--target_id", "0", "--seed", "1", "--save_image", "--no_progress"]
PANELS = (("No defense", ["--defense", "none"]),
          ("Soteria 60 %", ["--defense", "soteria", "--pruning_rate", "60"]),
          ("Soteria 60 %, mask-aware attacker", ["--defense", "soteria", "--pruning_rate", "60",
                                                "--attacker", "mask-aware"]))


def run(flags: list[str], folder: Path) -> tuple[Path, float]:
    """One reconstruction; returns its PNG (private | rebuilt) and PSNR."""
    subprocess.run([sys.executable, "-m", "soteria_lib.reconstruct", *COMMON, *flags, "--output", str(folder)],
                   check=True, cwd=ROOT)
    return folder / "reconstruction.png", json.loads((folder / "metrics.json").read_text())["psnr"]


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with tempfile.TemporaryDirectory() as scratch:
        runs = [(title, *run(flags, Path(scratch) / str(i))) for i, (title, flags) in enumerate(PANELS)]
        figure, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 2.1), dpi=100)
        for axis, (title, image, psnr) in zip(axes, runs):
            axis.imshow(plt.imread(image), cmap="gray")
            axis.set_title(f"{title}\nprivate | rebuilt, {psnr:.0f} dB", fontsize=9)
            axis.axis("off")
        figure.tight_layout()
        figure.savefig(OUTPUT)
    print(OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
