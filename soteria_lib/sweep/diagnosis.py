"""Which part of a failed attack failed, its optimiser or its objective (chapter 5, "What the noise
leaves of r").

A DLG run ends at the image its best restart matched best, and records that match's value, the
row's ``matching_loss`` L(x_attack). The same objective at the client's private image, evaluated by
the analyst (never by the attacker) on the update the run attacked, rebuilt from the row's seeds,
tells them apart:

    L(x_attack) <= L(x_private): the objective failed. The attacker found an image that explains the
        shared update at least as well as the private one, so no better optimiser of this objective
        would return the private image; a stronger attacker needs another objective (a prior on
        natural images, for instance).
    L(x_attack) >  L(x_private): the optimiser failed. The private image scores better, and a
        stronger search of the same objective could find it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..attacks.dlg import objective_at
from ..pipeline import client_round
from .specs import ReconstructionSpec


@dataclass(frozen=True)
class Diagnosis:
    """The runs of one cell that rebuilt nothing, and how many of those the objective failed."""

    failed: int
    objective: int  # failed runs that ended at or below the private image's value of their objective

    @property
    def optimiser(self) -> int:
        return self.failed - self.objective


def private_loss(row: dict, data_root: str | None = None) -> float:
    """The run's own objective at the private image and label, on the update the run attacked (DLG on
    an initial model: the rows that hold everything needed to rebuild that update)."""
    if row["attack"] != "dlg" or row["model_state"] != "init":
        raise ValueError("only DLG runs on initial models can be diagnosed, "
                         f"not {row['attack']} on {row['model_state']}")
    setup = ReconstructionSpec.from_row(row).setup(data_root=data_root)
    client = client_round(setup)
    return objective_at(client.model, client.update, client.batch.inputs, client.batch.labels, setup.attack_config())


def diagnose(rows: list[dict], threshold: float, data_root: str | None = None) -> Diagnosis:
    """The diagnosis of ``rows`` (one cell's runs): those below ``threshold`` dB, and of them the ones
    whose attack ended at or below the private image's value of its objective."""
    failed = [row for row in rows if row["psnr"] < threshold]
    return Diagnosis(len(failed), sum(row["matching_loss"] <= private_loss(row, data_root) for row in failed))
