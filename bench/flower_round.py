"""The federation app run with `flwr run` against the library's own FedAvg loop: the same federation.

    SOTERIA_DATA=/path/to/data python bench/flower_round.py               # no defense, 3 rounds
    SOTERIA_DATA=/path/to/data python bench/flower_round.py --defense soteria --pruning_rate 50

Both train the teaching federation (10 clients, 3 per round, batch 8, 6,000 MNIST images) from
the same seed and end with the same accuracy, which the script checks. Our loop runs the
clients one after another in this process with one torch thread; Flower (flower_apps/federation on
a SuperLink started here, soteria_lib.flower_run) runs them in Ray worker processes, ``--cpus`` at
a time, with one thread each. Flower's time is split into its start-up (``flwr run``, the
simulation, Ray, the workers and the nodes' first answer) and its rounds. Ratios above 1 mean
Flower took longer.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from soteria_lib.book_files import book_file
from soteria_lib.data import dataset_info
from soteria_lib.defenses import from_flags
from soteria_lib.federated import FedAvgConfig, FedAvgExperiment, run_fedavg
from soteria_lib.flower import Federation
from soteria_lib.flower_run import LocalSuperLink
from soteria_lib.runtime import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--defense", default="none")
    parser.add_argument("--pruning_rate", type=float, default=0.0)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    experiment = FedAvgExperiment(dataset="mnist", defense=args.defense,
                                  defense_settings=from_flags(args.defense, pruning_rate=args.pruning_rate),
                                  training=FedAvgConfig(rounds=args.rounds))
    federation = Federation(experiment)
    train, test = federation.split(train=True), federation.split(train=False)

    seed_everything(experiment.training.seed)
    start = time.perf_counter()
    ours = run_fedavg(federation.model(), train, test, experiment.training, experiment.build_defense(),
                      progress=False, normalization=dataset_info("mnist").normalization)
    our_seconds = time.perf_counter() - start
    training = experiment.training
    config = {"train-examples": len(train[1]), "clients": training.clients, "fraction": training.fraction,
              "rounds": training.rounds, "batch-size": training.batch_size, "lr": training.lr, "seed": training.seed,
              "defense": args.defense, "pruning-rate": args.pruning_rate}
    with LocalSuperLink(cpus=args.cpus) as link, tempfile.TemporaryDirectory() as output:
        start = time.perf_counter()
        run = link.run(book_file("flower_apps", "federation"), config, training.clients, output)
        flower_seconds = time.perf_counter() - start
    flower_rounds = sum(r["seconds"] for r in run.history[1:])
    startup = flower_seconds - flower_rounds
    assert [r["accuracy"] for r in run.history] == [r["accuracy"] for r in ours], "the engines disagree"

    print(f"{args.rounds} rounds of FedAvg, defense {args.defense}, {experiment.training.clients} clients "
          f"({round(experiment.training.fraction * experiment.training.clients)} per round), "
          f"final accuracy {100 * ours[-1]['accuracy']:.2f} % on both engines")
    print(f"our loop (1 thread)        {our_seconds:8.2f} s   {our_seconds / args.rounds:7.2f} s per round")
    cpus = f"{args.cpus} CPU" + ("s" if args.cpus > 1 else "")
    print(f"Flower ({cpus}), rounds   {flower_rounds:8.2f} s   {flower_rounds / args.rounds:7.2f} s per round"
          f"   ratio {flower_rounds / our_seconds:.2f}")
    print(f"Flower start-up            {startup:8.2f} s")
    print(f"Flower in all              {flower_seconds:8.2f} s   ratio {flower_seconds / our_seconds:.2f}")


if __name__ == "__main__":
    main()
