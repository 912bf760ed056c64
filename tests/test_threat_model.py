import inspect

import pytest
import torch

from soteria_lib.attacks import ATTACKS, attack_info, get_attack
from soteria_lib.attacks import infer_label
from soteria_lib.data import Normalization
from soteria_lib.leakage import recover_representation, true_representation
from soteria_lib.models import get_model
from soteria_lib.threat import PrivateBatch, SharedUpdate, share_update


def _update(shape=(3, 32, 32), label=7, seed=0, defense=None):
    torch.manual_seed(seed)
    model = get_model("lenet", shape)
    batch = PrivateBatch(torch.rand(1, *shape), torch.tensor([label]))
    return model, batch, share_update(model, batch, Normalization.identity(shape[0]), defense)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_take_only_the_model_and_the_shared_update(name):
    parameters = inspect.signature(get_attack(name)).parameters
    positional = [p for p in parameters.values() if p.default is inspect.Parameter.empty
                  and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional] == ["model", "update"]
    private = {"inputs", "labels", "batch", "images", "target", "truth"}
    assert not private & set(parameters) and not private & set(attack_info(name).settings())


def test_shared_update_holds_gradients_and_metadata_only():
    model, batch, update = _update()
    assert isinstance(update, SharedUpdate)
    assert set(vars(update)) == {"gradients", "metadata"}
    assert len(update.gradients) == len(list(model.parameters()))
    assert all(not g.requires_grad for g in update.gradients)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_fully_connected_layer_leaks_its_input_exactly(shape):
    model, batch, update = _update(shape)
    recovered = recover_representation(model, update)
    truth = true_representation(model, batch.inputs)[0]
    assert recovered.shape == truth.shape == (12 * (8 if shape[1] == 32 else 7) ** 2,)
    torch.testing.assert_close(recovered, truth, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("label", [0, 3, 9])
def test_idlg_reads_the_label_from_the_gradient(label):
    model, _, update = _update(label=label)
    assert int(infer_label(model, update)) == label


def test_label_inference_needs_a_batch_of_one():
    torch.manual_seed(0)
    model = get_model("lenet", (3, 32, 32))
    batch = PrivateBatch(torch.rand(2, 3, 32, 32), torch.tensor([1, 2]))
    update = share_update(model, batch, Normalization.identity(3))
    with pytest.raises(ValueError, match="batch of one"):
        infer_label(model, update)


def test_a_batch_needs_inputs_and_one_integer_label_each():
    with pytest.raises(ValueError, match="at least one input"):
        PrivateBatch(torch.rand(0, 1, 28, 28), torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="one integer label per input"):
        PrivateBatch(torch.rand(2, 1, 28, 28), torch.tensor([1]))
    with pytest.raises(ValueError, match="one integer label per input"):
        PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([1.0]))


def test_a_model_must_end_in_its_linear_classifier():
    """The leak (chapter 1), Soteria's default layer and the label count all come from the last
    nn.Linear; a model whose output is something else is refused, not misread."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10), torch.nn.Linear(10, 10),
                                torch.nn.Softmax(dim=1), torch.nn.Unflatten(1, (2, 5)))
    batch = PrivateBatch(torch.rand(1, 1, 28, 28), torch.tensor([1]))
    with pytest.raises(ValueError, match="final nn.Linear"):
        share_update(model, batch, Normalization.identity(1))
    with pytest.raises(ValueError, match="no nn.Linear"):
        share_update(torch.nn.Sequential(torch.nn.Flatten()), batch, Normalization.identity(1))


def test_a_diverged_model_shares_nothing():
    model, batch, _ = _update()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        share_update(model, batch, Normalization.identity(3))


LENET_MNIST = (1, 28, 28)


@pytest.mark.parametrize("inputs, labels, needle", [
    (torch.rand(1, 1, 28, 28), torch.tensor([-100]), "labels are class indices >= 0, got -100"),
    (torch.rand(2, 1, 28, 28), torch.tensor([3, -1]), "labels are class indices >= 0, got -1"),
    (torch.rand(1, 1, 28, 28), torch.tensor([True]), "labels are class indices"),
    (torch.rand(1, 28, 28), torch.tensor([3]), "one image needs a batch dimension"),  # a 3-D batch
    (torch.rand(28, 28), torch.tensor([3]), "(batch, channels, height, width)"),
])
def test_a_batch_the_client_could_not_train_on_is_refused_when_made(inputs, labels, needle):
    with pytest.raises(ValueError) as info:
        PrivateBatch(inputs, labels)
    assert needle in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("inputs, labels, needle", [
    (torch.rand(1, 1, 28, 28), torch.tensor([10]), "label 10 is out of range for a model with 10 classes"),
    (torch.rand(1, 1, 32, 32), torch.tensor([3]), "the model cannot read inputs of shape (1, 1, 32, 32)"),
    (torch.rand(1, 3, 28, 28), torch.tensor([3]), "the model cannot read inputs of shape (1, 3, 28, 28)"),
])
def test_an_update_the_model_cannot_compute_is_one_library_error(inputs, labels, needle):
    """Not an IndexError deep in cross-entropy, nor a matrix product's RuntimeError."""
    model = get_model("lenet", LENET_MNIST)
    with pytest.raises(ValueError) as info:
        share_update(model, PrivateBatch(inputs, labels), Normalization.identity(1))
    assert needle in str(info.value) and "\n" not in str(info.value)
