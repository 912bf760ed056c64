"""Command line: one gradient-inversion experiment, with the original repository's flags.

    python -m soteria_lib.reconstruct --target_id=-1 --defense=ours --pruning_rate=60 --save_image

runs the original repository's experiment (GS against an untrained ConvNet, CIFAR-10) and
writes ``OUTPUT/metrics.json`` (and with ``--save_image`` ``reconstruction.png`` in
``--image_path``, by default ``OUTPUT``). ``--attack=dlg`` runs DLG on its LeNet instead.
Bad input exits with status 2 and one line on stderr, before any work; nothing is written unless
the run finishes. Ctrl-C (or SIGTERM) stops the attack, writes its best result so far, marked
``interrupted``, and exits with 130 (143); a second signal never leaves the image without its
``metrics.json``: the two files appear together or not at all.
The run itself is :func:`soteria_lib.pipeline.run_reconstruction` (chapters 2 to 4).
"""
from __future__ import annotations

from pathlib import Path

from ._cli import (Parser, add_defense_arguments, check_writable_folder, command, count, defense_settings, exit_with,
                   fail, interrupted_code, non_negative_float, parse_command_line, quiet_start, seed_int)

PROG = "soteria-reconstruct"
if __name__ == "__main__":
    quiet_start(PROG)  # before torch is imported: a Ctrl-C now is one line, not a traceback

from .attacks import ATTACKS  # noqa: E402 (after the signal handlers)
from .attacks.battery import ATTACKERS, attacker_info
from .data import DATASETS, DatasetNotFoundError
from .files import json_writer, write_together
from .models import MODELS
from .pipeline import Setup, run_reconstruction
from .plotting import save_comparison
from .scales import SCALES

# Flags that set fields of the attack's settings, passed on only when given (their defaults
# live in the attack's config): flag -> field.
ATTACK_FLAGS = {"max_iterations": "max_iterations", "restarts": "restarts", "tv": "tv", "cost_fn": "cost_fn",
                "optimizer": "optimizer", "infer_label": "infer_labels", "adaptive": "adaptive"}


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Reconstruct a client's image from its (defended) gradient.")
    p.add_argument("--attack", default="gs", choices=sorted(ATTACKS))
    p.add_argument("--model", default=None, choices=sorted(MODELS),
                   help="default: the attack's published model (gs: convnet, dlg: lenet)")
    p.add_argument("--dataset", default="cifar10", choices=sorted(DATASETS))
    p.add_argument("--target_id", type=int, default=-1, help="image index; -1 = the embedded photograph")
    add_defense_arguments(p)
    p.add_argument("--scale", default="teaching", choices=list(SCALES))
    p.add_argument("--max_iterations", type=count("max_iterations"), default=None,
                   help="overrides the scale's iteration count")
    p.add_argument("--dryrun", action="store_true", help="run one iteration only (a smoke test)")
    p.add_argument("--restarts", type=count("restarts"), default=None, help="GS: independent dummies (default 1)")
    p.add_argument("--tv", type=non_negative_float, default=None, help="GS: total-variation weight (default 1e-4)")
    p.add_argument("--cost_fn", default=None, help="GS: gradient matching cost, sim or l2 (default sim)")
    p.add_argument("--optimizer", default=None, help="GS: optimiser, adam, sgd or lbfgs (default adam)")
    p.add_argument("--infer_label", action="store_true", default=None,
                   help="read the label from the gradient (iDLG)")
    p.add_argument("--adaptive", action="store_true", default=None,
                   help="mask-aware attacker: match only the entries that are non-zero in the update")
    p.add_argument("--attacker", default="plain", choices=list(ATTACKERS),
                   help="an attacker of the battery (soteria_lib.attacks.battery); its settings come "
                        "under the flags above")
    p.add_argument("--seed", type=seed_int, default=0, help="an integer in [0, 2**32 - 1]")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data_root", "--data_path", dest="data_root", default=None,
                   help="dataset folder (default: $SOTERIA_DATA)")
    p.add_argument("--output", default="runs/reconstruct", help="folder for metrics.json and images")
    p.add_argument("--save_image", action="store_true", help="write ground truth | reconstruction as PNG")
    p.add_argument("--image_path", default=None, help="folder for the PNG (default: --output)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def setup_from(args) -> Setup:
    options = {**attacker_info(args.attacker).options,
               **{field: getattr(args, flag) for flag, field in ATTACK_FLAGS.items() if getattr(args, flag) is not None}}
    if args.dryrun:
        options["max_iterations"] = 1
    return Setup(attack=args.attack, dataset=args.dataset, target_id=args.target_id, defense=args.defense,
                 defense_settings=defense_settings(args), seed=args.seed, scale=args.scale, attack_options=options,
                 model=args.model, device=args.device, data_root=args.data_root)


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_command_line(PROG, build_parser, argv)
    out = Path(args.output)
    images = Path(args.image_path) if args.image_path else out
    try:  # the folders first: run_reconstruction checks every name and number before any work
        setup = setup_from(args)
        check_writable_folder(out)
        if args.save_image:
            check_writable_folder(images, "image folder")
        result = run_reconstruction(setup, progress=not args.no_progress)
        write_results(result, args, out, images)
    except (ValueError, DatasetNotFoundError) as exc:
        return fail(PROG, str(exc))
    except FloatingPointError as exc:
        return fail(PROG, f"the run failed: {exc}", 1)
    except KeyboardInterrupt:
        return fail(PROG, "interrupted before a result existed; nothing written", interrupted_code())
    m = result.metrics
    state = ", interrupted" if m["interrupted"] else ", diverged" if m["diverged"] else ""
    print(f"mse={m['mse']:.4g} psnr={m['psnr']:.2f}dB ssim={m['ssim']:.3f} label_correct={m['label_correct']} "
          f"({m['iterations']} iterations{state}, {m['seconds']:.1f}s on {m['device']}) -> {out / 'metrics.json'}")
    return interrupted_code() if m["interrupted"] else 0


def write_results(result, args, out: Path, images: Path) -> None:
    """``metrics.json`` and, with ``--save_image``, the PNG: together or not at all (their folders
    are created with them, and removed again if the disk refuses them)."""
    writers = {}
    if args.save_image:
        normalization = result.update.metadata.normalization
        truth = normalization.normalize(result.target.image)
        writers[images / "reconstruction.png"] = lambda tmp: save_comparison(
            tmp, truth, result.reconstruction.inputs[0], normalization,
            ("ground truth", f"{args.attack}, {result.setup.setting().label()}"))
    writers[out / "metrics.json"] = json_writer(result.metrics)
    write_together(writers)


if __name__ == "__main__":
    exit_with(main())
