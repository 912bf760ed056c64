"""One client step under DP-SGD: torch.func per-example gradients (ours) against Opacus's
GradSampleModule and against a plain step, in one process.

    python bench/dpsgd_step.py                 # ReLU LeNet on MNIST-shaped inputs, batch 8
    python bench/dpsgd_step.py --batch 32 --repeats 50

Each path computes the per-example gradients of the mean cross-entropy of a random batch and
clips them (Opacus: its hooks fill ``grad_sample``; ours: ``vmap`` of ``grad``); the plain step
is :func:`soteria_lib.threat.loss_gradients`. Every path runs ``--warmup`` times untimed, then
``--repeats`` times; the best time is reported with its ratio to the plain step. The last line
checks that both per-example paths agree (largest difference relative to the largest entry).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from opacus import GradSampleModule

from soteria_lib.defenses.dpsgd import clipped_sum, per_example_gradients
from soteria_lib.models import get_model
from soteria_lib.threat import loss_gradients


def best_seconds(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def opacus_per_example(wrapped, inputs, labels) -> tuple:
    wrapped.zero_grad(set_to_none=True)
    F.cross_entropy(wrapped(inputs), labels).backward()
    # with loss_reduction="mean" (the default) Opacus rescales grad_sample to each example's own gradient
    return tuple(p.grad_sample for p in wrapped.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = get_model("lenet", (1, 28, 28), activation="relu", init="default")
    inputs, labels = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    wrapped = GradSampleModule(get_model("lenet", (1, 28, 28), activation="relu", init="default"))
    wrapped._module.load_state_dict(model.state_dict())

    plain = best_seconds(lambda: loss_gradients(model, inputs, labels), args.warmup, args.repeats)
    ours = best_seconds(lambda: clipped_sum(per_example_gradients(model, inputs, labels), 1.0), args.warmup,
                        args.repeats)
    theirs = best_seconds(lambda: clipped_sum(opacus_per_example(wrapped, inputs, labels), 1.0), args.warmup,
                          args.repeats)
    print(f"batch {args.batch}, {args.threads} thread(s), best of {args.repeats}")
    print(f"plain step (batch gradient):      {1e3 * plain:8.2f} ms   1.00x")
    print(f"DP-SGD, torch.func (ours):        {1e3 * ours:8.2f} ms   {ours / plain:.2f}x")
    print(f"DP-SGD, Opacus GradSampleModule:  {1e3 * theirs:8.2f} ms   {theirs / plain:.2f}x")
    a, b = per_example_gradients(model, inputs, labels), opacus_per_example(wrapped, inputs, labels)
    scale = max(float(x.abs().max()) for x in a)
    print(f"largest difference between the two: {max(float((x - y).abs().max()) for x, y in zip(a, b)) / scale:.1e}"
          " of the largest entry")


if __name__ == "__main__":
    main()
