"""Soteria's scores: our exact fast path against the published per-feature loop, one process.

    python bench/soteria_scores.py                          # LeNet and ConvNet-64, batch 1 and 8
    python bench/soteria_scores.py --models lenet --batches 1 --threads 2
    python bench/soteria_scores.py --loop_sample 256        # time 256 loop features, extrapolate
    python bench/soteria_scores.py --device cuda
    python bench/soteria_scores.py --models convnet --width 4 --batches 1    # a quick check

The loop is the authors' rule: one forward pass of the batch, then one backward pass per
feature i with the cotangent e_i on every sample (samples are independent in eval mode), that is
l backward passes of the whole batch. Every backward pass of that loop costs the same, so with
``--loop_sample N`` it runs on N random features only and its time is scaled by l/N (printed
as "~"). The fast path is ``soteria_scores(method="auto")`` on all features (the method it
picked is printed: batched chunk size, or the loop). Both run once untimed on a small input
first. Inputs are uniform random images, the models untrained (LeNet: DLG's init; ConvNet:
PyTorch's default, eval mode), epsilon the model's default. Times come from runs without any
memory probe (a thread sampling the resident set every millisecond slows the loop's many
small calls by about 13 %). Peak memory is measured in separate runs: the largest rise of the
process's resident set size above its level at the start (sampled every millisecond) on a
CPU, ``torch.cuda.max_memory_allocated`` above the start on a GPU. Neither path's peak grows
with the work done: the loop frees each backward pass before the next, so its probe runs 16
features; the fast path treats the samples one at a time, so its probe runs one sample. The
last column is max_i |fast_i - loop_i| / max_i |loop_i| (on the sampled features).

Both paths compute the same B * l Jacobian rows with the same convolution kernels; the fast
path saves the loop's fixed cost per backward call and skips certified-zero features. At
batch 1 that fixed cost is most of the loop's time; at batch 8 every call of the loop already
carries 8 samples, so the ratio shrinks (on 2 CPU cores, LeNet: about 6.5x at batch 1, 1.5x at
batch 8, where the fast path's convolution backward alone takes about half the loop's time).

At batch 1 both paths run the same kernels; at batch 8 the loop's batched forward rounds
differently (convolution kernels depend on the batch size), by about 1e-7 of the largest
value, which is up to 1e-3 relative for the tiniest features; tests/test_defenses.py checks
the per-feature 1e-6 agreement against a per-sample loop.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time

import torch

from soteria_lib.defenses import soteria_scores
from soteria_lib.defenses.soteria import default_epsilon, plan_chunk
from soteria_lib.introspection import representation_fn, select_linear
from soteria_lib.models import get_model

MODELS = {"lenet": ("lenet", {}), "convnet": ("convnet", {"width": 64})}


def published_loop(model, inputs, epsilon, features=None):
    """Scores of ``features`` (default: all) by one backward pass of the batch per feature."""
    x = inputs.clone().requires_grad_(True)
    r = representation_fn(model, select_linear(model)[1])(x)
    index = range(r.shape[1]) if features is None else features
    scores = []
    for i in index:
        norms = torch.autograd.grad(r[:, i].sum(), x, retain_graph=True)[0].flatten(1).norm(dim=1)
        zero = (norms == 0) & (r[:, i] == 0)
        scores.append(torch.where(zero, 0.0, norms / (r[:, i].detach().abs() + epsilon)).sum())
    return torch.stack(scores)


class PeakMemory:
    """Largest rise of resident memory (CPU) or allocated memory (GPU) inside the block, in MiB."""

    def __init__(self, device: torch.device):
        self.device = device

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        try:  # give freed heap memory back first, so that the rise is this block's own
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:
            pass
        self.start = self.peak = self._rss()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        else:
            self.done.set()
            self.thread.join()
            self.mib = (max(self.peak, self._rss()) - self.start) / 2**20


def timed(fn, device):
    """``(fn(), wall-clock seconds)``, with no memory probe running."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def peak_mib(fn, device):
    with PeakMemory(device) as memory:
        fn()
    return memory.mib


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,convnet", help="comma-separated: lenet, convnet")
    p.add_argument("--width", type=int, default=64, help="the ConvNet's width (default 64, the paper's)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--loop_sample", type=int, default=None, help="time the loop on this many random features")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {args.threads} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"{'model':8s} {'batch':>5s} {'features':>8s} {'zero r':>6s} {'method':>11s} {'loop s':>9s} "
          f"{'fast s':>8s} {'speed-up':>8s} {'loop MiB':>8s} {'fast MiB':>8s} {'rel diff':>8s}")
    for model_name in args.models.split(","):
        name, options = MODELS[model_name]
        options = {**options, "width": args.width} if name == "convnet" else options
        torch.manual_seed(args.seed)
        model = get_model(name, (3, 32, 32), **options).to(device).eval()
        epsilon = default_epsilon(model)
        soteria_scores(model, torch.rand(1, 3, 32, 32, device=device), method="batched")  # warm-up
        published_loop(model, torch.rand(1, 3, 32, 32, device=device), epsilon, range(4))
        for batch in map(int, args.batches.split(",")):
            inputs = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(args.seed)).to(device)
            run = representation_fn(model, select_linear(model)[1])
            r = run(inputs).detach()
            features = r.shape[1]
            chunk = plan_chunk(model, run, inputs[:1])
            sample = None
            if args.loop_sample and args.loop_sample < features:
                sample = torch.randperm(features, generator=torch.Generator().manual_seed(1))[:args.loop_sample]
            fast, fast_s = timed(lambda: soteria_scores(model, inputs, epsilon=epsilon), device)
            loop, loop_s = timed(lambda: published_loop(model, inputs, epsilon, sample).detach(), device)
            fast_mib = peak_mib(lambda: soteria_scores(model, inputs[:1], epsilon=epsilon), device)
            loop_mib = peak_mib(lambda: published_loop(model, inputs, epsilon, range(16)), device)
            if sample is not None:
                loop_s *= features / len(sample)
                fast = fast[sample]
            rel = float((fast - loop).abs().max() / loop.abs().max())
            method = f"batched {chunk}" if chunk else "loop"
            approx = "~" if sample is not None else " "
            print(f"{model_name:8s} {batch:5d} {features:8d} {float((r == 0).float().mean()):6.1%} {method:>11s} "
                  f"{approx}{loop_s:8.2f} {fast_s:8.2f} {loop_s / fast_s:7.2f}x {loop_mib:8.1f} {fast_mib:8.1f} "
                  f"{rel:8.1e}", flush=True)


if __name__ == "__main__":
    main()
