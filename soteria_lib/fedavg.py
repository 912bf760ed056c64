"""Command line: FedAvg training with a defense on every local step, and its accuracy curve.

    python -m soteria_lib.fedavg --dataset mnist --defense soteria --pruning_rate 50 --output runs/fedavg

writes ``OUTPUT/metrics.json`` (per-round accuracy and loss, final accuracy, seconds, where it
ran) and ``OUTPUT/accuracy.png``; ``OUTPUT/checkpoint.pt`` lets an interrupted run resume. The
scale's table (:mod:`soteria_lib.scales`) sets the examples: the teaching scale trains on the
first 6,000 training images and tests on 2,000; ``--scale paper`` uses whole datasets. The run is
:func:`soteria_lib.federated.run_experiment` (chapter 6); the defaults are
:class:`~soteria_lib.federated.FedAvgConfig`'s. The split is IID unless ``--alpha`` is given.
Ctrl-C (SIGTERM) keeps the checkpoint of the last finished round and exits with 130 (143); the
same command resumes from it.
"""
from __future__ import annotations

from ._cli import (Parser, add_defense_arguments, check_writable_folder, command, count, defense_settings, exit_with,
                   fail, interrupted_code, parse_command_line, positive_float, quiet_start, seed_int)

PROG = "soteria-fedavg"
if __name__ == "__main__":
    quiet_start(PROG)  # before torch is imported: a Ctrl-C now is one line, not a traceback

from .data import DATASETS, DatasetNotFoundError  # noqa: E402 (after the signal handlers)
from .privacy import OpacusMissing
from .federated import FedAvgConfig, FedAvgExperiment, run_experiment
from .models import MODELS
from .scales import SCALES

DEFAULTS = FedAvgConfig()


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Federated averaging with a gradient defense on every client step.")
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    p.add_argument("--model", default="lenet", choices=sorted(MODELS))
    p.add_argument("--scale", default="teaching", choices=list(SCALES))
    p.add_argument("--clients", type=count("clients"), default=DEFAULTS.clients)
    p.add_argument("--fraction", type=positive_float, default=DEFAULTS.fraction, help="clients per round, in (0, 1]")
    p.add_argument("--rounds", type=count("rounds"), default=DEFAULTS.rounds)
    p.add_argument("--local_epochs", type=count("local_epochs"), default=DEFAULTS.local_epochs)
    p.add_argument("--batch_size", type=count("batch_size"), default=DEFAULTS.batch_size)
    p.add_argument("--lr", type=positive_float, default=DEFAULTS.lr)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--iid", action="store_true", help="IID split (the default when --alpha is not given)")
    split.add_argument("--alpha", type=positive_float, default=None, help="Dirichlet(alpha) label-skewed split")
    add_defense_arguments(p)
    p.add_argument("--seed", type=seed_int, default=DEFAULTS.seed, help="an integer in [0, 2**32 - 1]")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--data_root", "--data_path", dest="data_root", default=None)
    p.add_argument("--output", default="runs/fedavg")
    p.add_argument("--no_progress", action="store_true")
    return p


def experiment_from(args) -> FedAvgExperiment:
    split = {"iid": True} if args.alpha is None else {"iid": False, "alpha": args.alpha}
    training = FedAvgConfig(clients=args.clients, fraction=args.fraction, rounds=args.rounds,
                            local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, **split)
    return FedAvgExperiment(dataset=args.dataset, model=args.model, scale=args.scale, defense=args.defense,
                            defense_settings=defense_settings(args), training=training)


@command(PROG)
def main(argv: list[str] | None = None) -> int:
    args = parse_command_line(PROG, build_parser, argv)
    try:
        experiment = experiment_from(args)
        check_writable_folder(args.output)
        result = run_experiment(experiment, args.output, args.device, args.data_root, not args.no_progress)
    except (ValueError, DatasetNotFoundError, OpacusMissing) as exc:
        return fail(PROG, str(exc))
    except FloatingPointError as exc:
        return fail(PROG, f"the run failed: {exc}", 1)
    except KeyboardInterrupt:
        return fail(PROG, f"interrupted; every finished round is in {args.output}/checkpoint.pt, run the same "
                          "command again to resume", interrupted_code())
    print(f"final accuracy {result['final_accuracy']:.4f} after {experiment.training.rounds} rounds "
          f"({result['seconds']:.1f}s on {result['device']}) -> {args.output}/metrics.json")
    if result["privacy"]:
        budget = result["privacy"]
        print(f"privacy: epsilon {budget['epsilon']:.3g} at delta {budget['delta']:g} for each example of the "
              f"worst client ({budget['steps']} DP-SGD steps at sample rate {budget['sample_rate']:.3g})")
    return 0


if __name__ == "__main__":
    exit_with(main())
