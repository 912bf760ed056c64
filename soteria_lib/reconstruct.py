"""Command line: one gradient-inversion experiment, with the original repository's flags.

    python -m soteria_lib.reconstruct --target_id=-1 --defense=ours --pruning_rate=60 --save_image

runs the original repository's experiment (GS against an untrained ConvNet, CIFAR-10) and
writes ``OUTPUT/metrics.json`` (and with ``--save_image`` ``reconstruction.png`` in
``--image_path``, by default ``OUTPUT``). ``--attack=dlg`` runs DLG on its LeNet instead.
Bad input exits with status 2 and one line on stderr; nothing is written unless the run
finishes (an interrupted attack still writes its best result, marked ``interrupted``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .attacks import ATTACKS
from .attacks.gs import COSTS, OPTIMIZERS
from .data import DATASETS, DatasetNotFoundError
from .defenses import DEFENSES
from .defenses.registry import ALIASES
from .files import write_atomic
from .models import MODELS

PROG = "soteria-reconstruct"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


_positive_int.__name__ = "positive int"  # argparse's "invalid <type> value" message
_non_negative_float.__name__ = "non-negative float"

# GS options: passed to the attack only when given, so that its defaults stay in one place.
ATTACK_FLAGS = ("restarts", "tv", "cost_fn", "optimizer")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Reconstruct a client's image from its (defended) gradient.")
    p.add_argument("--attack", default="gs", choices=sorted(ATTACKS))
    p.add_argument("--model", default=None, choices=sorted(MODELS),
                   help="default: the attack's published model (gs: convnet, dlg: lenet)")
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--target_id", type=int, default=-1, help="image index; -1 = the embedded photograph")
    p.add_argument("--defense", default="none", choices=sorted(set(DEFENSES) | set(ALIASES)))
    p.add_argument("--pruning_rate", type=float, default=0.0, help="percentage in [0, 100)")
    p.add_argument("--epsilon", type=float, default=None, help="Soteria's score guard (default by model)")
    p.add_argument("--noise", type=float, default=0.0, help="dp-gaussian: sigma; dp-laplace: scale b")
    p.add_argument("--clip", type=float, default=None,
                   help="dp-*: clip the update's global L2 norm to this before adding noise")
    p.add_argument("--scale", default="teaching", choices=["teaching", "paper"])
    p.add_argument("--max_iterations", type=int, default=None, help="overrides the scale's iteration count")
    p.add_argument("--dryrun", action="store_true", help="run one iteration only (a smoke test)")
    p.add_argument("--restarts", type=_positive_int, default=None, help="GS: independent dummies (default 1)")
    p.add_argument("--tv", type=_non_negative_float, default=None, help="GS: total-variation weight (default 1e-4)")
    p.add_argument("--cost_fn", default=None, choices=sorted(COSTS), help="GS: gradient matching cost (default sim)")
    p.add_argument("--optimizer", default=None, choices=sorted(OPTIMIZERS), help="GS: optimiser (default adam)")
    p.add_argument("--infer_label", action="store_true", help="read the label from the gradient (iDLG)")
    p.add_argument("--adaptive", action="store_true",
                   help="mask-aware attacker: match only the entries that are non-zero in the update")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data_root", "--data_path", dest="data_root", default=None,
                   help="dataset folder (default: $SOTERIA_DATA)")
    p.add_argument("--output", default="runs/reconstruct", help="folder for metrics.json and images")
    p.add_argument("--save_image", action="store_true", help="write ground truth | reconstruction as PNG")
    p.add_argument("--image_path", default=None, help="folder for the PNG (default: --output)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .experiment import Setup, run_reconstruction, validate
    from .plotting import save_comparison

    setup = Setup(attack=args.attack, dataset=args.dataset, target_id=args.target_id, defense=args.defense,
                  pruning_rate=args.pruning_rate, epsilon=args.epsilon, noise=args.noise, clip=args.clip,
                  adaptive=args.adaptive, seed=args.seed,
                  max_iterations=1 if args.dryrun else args.max_iterations, scale=args.scale,
                  infer_labels=args.infer_label, device=args.device, data_root=args.data_root, model=args.model,
                  attack_options={k: getattr(args, k) for k in ATTACK_FLAGS if getattr(args, k) is not None})
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
        images = Path(args.image_path) if args.image_path else out
        images.mkdir(parents=True, exist_ok=True)
        write_atomic(images / "reconstruction.png", lambda tmp: save_comparison(
            tmp, truth, result.reconstruction.inputs[0], normalization,
            ("ground truth", f"{args.attack}, {args.defense} {args.pruning_rate:g}%")))
    text = json.dumps(_json_safe(result.metrics), indent=2)
    write_atomic(out / "metrics.json", lambda tmp: Path(tmp).write_text(text + "\n"))
    m = result.metrics
    print(f"mse={m['mse']:.4g} psnr={m['psnr']:.2f}dB ssim={m['ssim']:.3f} label_correct={m['label_correct']} "
          f"({m['iterations']} iterations{', interrupted' if m['interrupted'] else ''}, {m['seconds']:.1f}s on "
          f"{m['device']}) -> {out / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
