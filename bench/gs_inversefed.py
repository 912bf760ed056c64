"""Our GS against a loop written the way inversefed runs it, on the same model, image and start.

    python bench/gs_inversefed.py                          # width 16 and 64, one restart, 2 threads
    python bench/gs_inversefed.py --widths 64 --restarts 4 --device cuda

The reference loop is the textbook form of the algorithm (our own code, after inversefed's
description): for each restart in turn and each iteration, the dummy's parameter gradient with
``create_graph=True``, one minus the cosine with the shared gradient plus the TV term, one
``backward()``, the sign of the image gradient, Adam (lr 0.1) with the same milestones, then the
clamp to the image box. It is timed against ``soteria_lib``'s GS on its default path (chosen by
``batch_restarts``), and on the plain and vmapped paths explicitly. The figures are the fastest of
``--repeats`` timings, in seconds per iteration of all restarts, after one untimed warm-up; the
ratio is the reference's time over ours (above 1: ours is faster). The final images of the
reference and our plain path are compared as a check that both run the same computation.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from soteria_lib.attacks import cosine_cost, get_attack
from soteria_lib.attacks.gs import batch_restarts, milestones, total_variation
from gs_restarts import gs_arguments, shared_update
from soteria_scores import timed


def reference_loop(model, update, restarts: int, iterations: int, tv: float = 1e-4, seed: int = 0):
    """GS restart by restart, one ``backward()`` per iteration, as inversefed structures it."""
    meta = update.metadata
    labels = update.metadata.extra["labels"]
    params = list(model.parameters())
    device = update.gradients[0].device
    start = torch.randn((restarts, meta.batch_size, *meta.input_shape),
                        generator=torch.Generator().manual_seed(seed)).to(device)
    low, high = meta.normalization.box(start[0, 0])
    results = []
    for r in range(restarts):
        x = start[r].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=0.1)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(iterations), gamma=0.1)
        for _ in range(iterations):
            optimizer.zero_grad()
            dummy = torch.autograd.grad(F.cross_entropy(model(x), labels), params, create_graph=True)
            loss = cosine_cost(dummy, update.gradients) + tv * total_variation(x)
            loss.backward()
            x.grad.sign_()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, high), low))
        results.append(x.detach())
    return torch.stack(results)


def fastest(run, repeats: int, device: torch.device) -> tuple[float, object]:
    """The fastest of ``repeats`` timings of ``run()``, and its last result."""
    timings = [timed(run, device) for _ in range(repeats)]
    return min(seconds for _, seconds in timings), timings[-1][0]


def main() -> None:
    args, device = gs_arguments(__doc__.splitlines()[0], restarts=1, iterations=20)
    gs = get_attack("gs")
    print(f"R = {args.restarts}, {args.iterations} iterations, {args.threads} threads, {device}; seconds per "
          "iteration (ratio: reference / ours)")
    for width in args.widths:
        model, update = shared_update(width, device)
        n = args.iterations
        runs = {
            "reference loop": lambda: reference_loop(model, update, args.restarts, n),
            "ours, default": lambda: gs(model, update, max_iterations=n, restarts=args.restarts, progress=False),
            "ours, plain": lambda: gs(model, update, max_iterations=n, restarts=args.restarts, batched=False,
                                      progress=False),
            "ours, vmap": lambda: gs(model, update, max_iterations=n, restarts=args.restarts, batched=True,
                                     progress=False),
        }
        reference_loop(model, update, args.restarts, 2)  # warm-up
        gs(model, update, max_iterations=2, restarts=args.restarts, progress=False, batched=True)
        times, results = {}, {}
        for name, run in runs.items():
            seconds, results[name] = fastest(run, args.repeats, device)
            times[name] = seconds / n
        default = "vmap" if batch_restarts(model, args.restarts, device) else "plain"
        print(f"width {width}: default path = {default}")
        for name, seconds in times.items():
            ratio = times["reference loop"] / seconds
            print(f"  {name:15s} {seconds:8.4f} s/it   ratio {ratio:5.2f}x")
        ours = results["ours, plain"]
        difference = float((ours.inputs - results["reference loop"][ours.details["best_restart"]]).abs().max())
        print(f"  max |x_ours - x_reference| after {n} iterations: {difference:.2e}")


if __name__ == "__main__":
    main()
