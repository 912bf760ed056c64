"""The mask-aware (adaptive) attacker against Soteria (chapter 4)."""
import torch
from torch.nn import functional as F

from soteria_lib.attacks import l2_cost, visible_masks
from soteria_lib.attacks.dlg import soft_cross_entropy
from soteria_lib.data import Normalization
from soteria_lib.defenses import get_defense
from soteria_lib.pipeline import Setup, run_reconstruction
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, share_update


def test_the_mask_is_visible_and_the_true_image_matches_only_when_it_is_applied():
    """Soteria's pruned columns are exact zeros in the update, so the server reads the mask off.
    With it applied to the dummy gradient, the private image matches the update exactly (a
    global minimum of the adaptive objective); without it, the private image does not."""
    torch.manual_seed(1)
    model = get_model("lenet", (1, 28, 28))
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([4]))
    defense = get_defense("soteria", pruning_rate=60)
    update = share_update(model, batch, Normalization.identity(1), defense)
    masks = visible_masks(update)
    keep = defense.mask(model, batch.inputs)
    assert torch.equal(masks[-2], keep.expand_as(masks[-2]))  # the defended weight: pruned columns
    assert all(bool(m.all()) for i, m in enumerate(masks) if i != len(masks) - 2)  # nothing else

    loss = soft_cross_entropy(model(batch.inputs), F.one_hot(batch.labels, 10).float())
    truth = torch.autograd.grad(loss, list(model.parameters()))
    plain = l2_cost(truth, update.gradients)
    adaptive = l2_cost(tuple(g * m for g, m in zip(truth, masks)), update.gradients)
    assert float(adaptive) == 0.0 and float(plain) > 0.0


# A fixed image and seed (the MNIST image of tests/test_dlg.py), 20 L-BFGS steps, Soteria at 60 %.
SETUP = dict(attack="dlg", dataset="mnist", target_id=0, seed=1, defense="soteria", defense_settings={"pruning_rate": 60})


def test_adaptive_dlg_recovers_what_plain_dlg_loses_under_soteria(data_root):
    plain = run_reconstruction(Setup(**SETUP, data_root=str(data_root), attack_options={"max_iterations": 20}),
                               progress=False).metrics
    adaptive = run_reconstruction(Setup(**SETUP, data_root=str(data_root),
                                        attack_options={"max_iterations": 20, "adaptive": True}),
                                  progress=False).metrics
    assert plain["mse"] > 1.0  # plain DLG is broken by the defense
    assert adaptive["mse"] < 1e-4 and adaptive["label_correct"]  # the adaptive attacker is not
    assert adaptive["attack_config"]["adaptive"] and not plain["attack_config"]["adaptive"]
