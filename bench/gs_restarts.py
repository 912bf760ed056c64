"""Batched against sequential GS restarts: the same R seeds, model and shared update, one process.

    python bench/gs_restarts.py                       # R = 4, widths 16 (teaching) and 64 (paper)
    python bench/gs_restarts.py --restarts 8 --widths 16 --iterations 50 --threads 2 --device cuda

The batched path computes all restarts' per-restart gradients in one ``torch.func.vmap`` pass;
the sequential path loops over the restarts with plain autograd. Both start from the same
dummies and use the same optimiser, so they must agree up to float rounding (the sign step can
amplify a rounding difference in a pixel whose gradient is almost zero; the printed maximum
differences show how far that went). After a short warm-up the two paths run ``--repeats``
times in turn; the figures are the fastest wall-clock seconds per iteration of all R restarts
together, final evaluation included (the minimum is the least disturbed by other processes
on a shared machine).
"""
from __future__ import annotations

import argparse
import time

import torch

from soteria_lib.attacks import get_attack
from soteria_lib.data import dataset_info, load_target
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, share_update


def shared_update(width: int, device: torch.device, seed: int = 0):
    """The undefended update of the embedded photograph on an untrained ConvNet of ``width``."""
    info = dataset_info("cifar10")
    target = load_target("cifar10", -1)
    torch.manual_seed(seed)
    model = get_model("convnet", info.shape, info.num_classes, width=width).to(device).eval()
    batch = PrivateBatch(info.normalization.normalize(target.image).unsqueeze(0).to(device),
                         torch.tensor([target.label], device=device))
    return model, share_update(model, batch, info.normalization, disclose_labels=True)


def timed(model, update, batched: bool, restarts: int, iterations: int, device: torch.device):
    """Seconds per iteration of one GS run, and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = get_attack("gs")(model, update, max_iterations=iterations, restarts=restarts, batched=batched,
                              progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations, result


def gs_arguments(description: str, restarts: int, iterations: int) -> tuple[argparse.Namespace, torch.device]:
    """The options of the GS benchmarks, parsed; torch's threads set; the device."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--restarts", type=int, default=restarts)
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--iterations", type=int, default=iterations)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    return args, torch.device(args.device)


def main() -> None:
    args, device = gs_arguments(__doc__.splitlines()[0], restarts=4, iterations=10)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"GS restarts, R = {args.restarts}, best of {args.repeats} x {args.iterations} iterations, {where}, "
          f"torch {torch.__version__}")
    print(f"{'width':>5} {'sequential s/it':>16} {'batched s/it':>13} {'speed-up':>9} "
          f"{'max |dx|':>9} {'max |d cost|':>12}")
    for width in args.widths:
        model, update = shared_update(width, device)
        for batched in (False, True):  # warm-up
            timed(model, update, batched, args.restarts, 2, device)
        times, results = {False: [], True: []}, {}
        for _ in range(args.repeats):
            for batched in (False, True):
                seconds, results[batched] = timed(model, update, batched, args.restarts, args.iterations, device)
                times[batched].append(seconds)
        seq, bat = min(times[False]), min(times[True])
        dx = float((results[False].inputs - results[True].inputs).abs().max())
        dcost = max(abs(a - b) for a, b in zip(results[False].details["restart_matching_losses"],
                                                results[True].details["restart_matching_losses"]))
        print(f"{width:>5} {seq:>16.4f} {bat:>13.4f} {seq / bat:>8.2f}x {dx:>9.2e} {dcost:>12.2e}")


if __name__ == "__main__":
    main()
