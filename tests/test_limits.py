"""What Soteria leaves open (notebook 08): the label, the other layers, batches."""
import pytest
import torch

from soteria_lib.attacks import get_attack
from soteria_lib.attacks import infer_label, l2_cost, matching_masks
from soteria_lib.data import Normalization, dataset_info
from soteria_lib.defenses import get_defense
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, SharedUpdate, loss_gradients, share_update

MNIST = (1, 28, 28)


def _lenet_update(defense=None, label=4, seed=1, batch_size=1):
    torch.manual_seed(seed)
    model = get_model("lenet", MNIST)
    labels = torch.tensor([label] * batch_size)
    batch = PrivateBatch(torch.rand(batch_size, *MNIST), labels)
    return model, batch, share_update(model, batch, Normalization.identity(1), defense, "soteria" if defense else "none")


def _replace(update: SharedUpdate, index: int, tensor: torch.Tensor) -> SharedUpdate:
    gradients = list(update.gradients)
    gradients[index] = tensor
    return SharedUpdate(tuple(gradients), update.metadata)


def test_matching_masks():
    model, _, update = _lenet_update(get_defense("soteria", pruning_rate=60))
    assert matching_masks(model, update) is None
    dropped = matching_masks(model, update, ignore_parameters=["fc.weight"])
    assert not dropped[-2].any() and all(bool(m.all()) for i, m in enumerate(dropped) if i != len(dropped) - 2)
    both = matching_masks(model, update, adaptive=True, ignore_parameters=["body.0.weight"])
    assert not both[0].any() and torch.equal(both[-2], update.gradients[-2] != 0)
    with pytest.raises(ValueError, match="unknown parameter"):
        matching_masks(model, update, ignore_parameters=["fc.kernel"])
    with pytest.raises(ValueError, match="no gradient"):
        matching_masks(model, update, ignore_parameters=[n for n, _ in model.named_parameters()])


def test_soteria_changes_only_the_defended_weight_so_dropping_it_leaves_the_private_image_exact():
    model, batch, clean = _lenet_update()
    _, _, defended = _lenet_update(get_defense("soteria", pruning_rate=90))
    same = [torch.equal(a, b) for a, b in zip(clean.gradients, defended.gradients)]
    assert same == [True] * 8 + [False, True]  # everything but fc.weight is shared in clear
    masks = matching_masks(model, defended, ignore_parameters=["fc.weight"])
    truth = loss_gradients(model, batch.inputs, batch.labels)
    dropped = l2_cost(tuple(g * m for g, m in zip(truth, masks)),
                                tuple(g * m for g, m in zip(defended.gradients, masks)))
    assert float(dropped) == 0.0 and float(l2_cost(truth, defended.gradients)) > 0.0


@pytest.mark.parametrize("attack", ["dlg", "gs"])
def test_an_ignored_gradient_has_no_influence_on_the_attack(attack):
    """Replacing the ignored tensor by garbage changes nothing: the attack never looks at it."""
    torch.manual_seed(0)
    if attack == "dlg":
        model = get_model("lenet", (1, 12, 12))
        batch, norm = PrivateBatch(torch.rand(1, 1, 12, 12), torch.tensor([2])), Normalization.identity(1)
    else:
        model = get_model("convnet", (3, 18, 18), width=2).eval()
        batch, norm = PrivateBatch(torch.randn(1, 3, 18, 18), torch.tensor([2])), dataset_info("cifar10").normalization
    update = share_update(model, batch, norm, get_defense("soteria", pruning_rate=60), disclose_labels=True)
    index = [n for n, _ in model.named_parameters()].index("fc.weight")
    garbage = _replace(update, index, 1e3 * torch.randn_like(update.gradients[index]))
    run = get_attack(attack)
    a = run(model, update, max_iterations=2, seed=2, progress=False, ignore_parameters=["fc.weight"])
    b = run(model, garbage, max_iterations=2, seed=2, progress=False, ignore_parameters=["fc.weight"])
    c = run(model, garbage, max_iterations=2, seed=2, progress=False)
    assert torch.equal(a.inputs, b.inputs) and a.losses == b.losses
    assert not torch.equal(a.inputs, c.inputs)


def test_idlg_reads_the_label_through_soteria():
    defense = get_defense("soteria", pruning_rate=95)
    for label in (0, 3, 7, 9):
        model, _, update = _lenet_update(defense, label=label, seed=label)
        assert int(infer_label(model, update, "weight")) == label == int(infer_label(model, update, "bias"))


def test_idlg_rules_are_checked():
    model, _, update = _lenet_update()
    with pytest.raises(ValueError, match="label rule"):
        infer_label(model, update, "logits")
    model, _, batch_update = _lenet_update(batch_size=2)
    with pytest.raises(ValueError, match="batch of one"):
        infer_label(model, batch_update, "bias")
