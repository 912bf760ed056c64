"""Reproduction sweeps (chapter 5's evidence): a grid of attacks x datasets x defenses x images x
seeds, plus FedAvg accuracy at the same defense settings, run into one CSV and summarised.

    python -m soteria_lib.experiments run experiments/teaching.toml --workers 2
    python -m soteria_lib.experiments summarize results/teaching.csv

Modules: :mod:`.grid` (grid files), :mod:`.results` (the CSV), :mod:`.runner` (running, FedAvg
cells included), :mod:`.summary` (statistics and matched-accuracy ratios), :mod:`.report`
(Markdown), :mod:`.plots` (figures). The command line is :mod:`soteria_lib.experiments`.
"""
from ..metrics import DIVERGED_MSE
from .grid import Grid, GridError, load_grid
from .results import read_rows
from .summary import summarize

__all__ = ["DIVERGED_MSE", "Grid", "GridError", "load_grid", "read_rows", "summarize"]
