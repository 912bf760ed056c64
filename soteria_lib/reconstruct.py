"""Command line: one gradient-inversion experiment, with the original repository's flags.

    python -m soteria_lib.reconstruct --attack=dlg --target_id=-1 --defense=ours --pruning_rate=60 --save_image

writes ``OUTPUT/metrics.json`` (and with ``--save_image`` ``OUTPUT/reconstruction.png``).
Bad input exits with status 2 and one line on stderr; nothing is written unless the run
finishes (an interrupted attack still writes its best result, marked ``interrupted``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from .attacks import ATTACKS
from .data import DATASETS, DatasetNotFoundError
from .defenses import DEFENSES
from .defenses.registry import ALIASES

PROG = "soteria-reconstruct"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Reconstruct a client's image from its (defended) gradient.")
    p.add_argument("--attack", default="dlg", choices=sorted(ATTACKS))
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--target_id", type=int, default=-1, help="image index; -1 = the embedded photograph")
    p.add_argument("--defense", default="none", choices=sorted(set(DEFENSES) | set(ALIASES)))
    p.add_argument("--pruning_rate", type=float, default=0.0, help="percentage in [0, 100)")
    p.add_argument("--epsilon", type=float, default=None, help="Soteria's score guard (default by model)")
    p.add_argument("--scale", default="teaching", choices=["teaching", "paper"])
    p.add_argument("--max_iterations", type=int, default=None, help="overrides the scale's iteration count")
    p.add_argument("--infer_label", action="store_true", help="read the label from the gradient (iDLG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data_root", "--data_path", dest="data_root", default=None,
                   help="dataset folder (default: $SOTERIA_DATA)")
    p.add_argument("--output", default="runs/reconstruct", help="folder for metrics.json and images")
    p.add_argument("--save_image", action="store_true", help="write ground truth | reconstruction as PNG")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .experiment import Setup, run_reconstruction, validate
    from .plotting import save_comparison

    setup = Setup(attack=args.attack, dataset=args.dataset, target_id=args.target_id, defense=args.defense,
                  pruning_rate=args.pruning_rate, epsilon=args.epsilon, seed=args.seed,
                  max_iterations=args.max_iterations, scale=args.scale, infer_labels=args.infer_label,
                  device=args.device, data_root=args.data_root)
    try:
        validate(setup)
        result = run_reconstruction(setup, progress=not args.no_progress)
    except (ValueError, DatasetNotFoundError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.save_image:
        normalization = result.update.metadata.normalization
        truth = normalization.normalize(result.target.image)
        _write_atomic(out / "reconstruction.png", lambda tmp: save_comparison(
            tmp, truth, result.reconstruction.inputs[0], normalization,
            ("ground truth", f"{args.attack}, {args.defense} {args.pruning_rate:g}%")))
    text = json.dumps(_json_safe(result.metrics), indent=2)
    _write_atomic(out / "metrics.json", lambda tmp: Path(tmp).write_text(text + "\n"))
    m = result.metrics
    print(f"mse={m['mse']:.4g} psnr={m['psnr']:.2f}dB ssim={m['ssim']:.3f} label_correct={m['label_correct']} "
          f"({m['iterations']} iterations, {m['seconds']:.1f}s on {m['device']}) -> {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
