import pytest
import torch

from soteria_lib.data import DATASETS, DatasetNotFoundError, embedded_image, load_dataset, load_target


@pytest.mark.parametrize("name, train, shape", [
    ("mnist", True, (1, 28, 28)), ("mnist", False, (1, 28, 28)),
    ("cifar10", True, (3, 32, 32)), ("cifar10", False, (3, 32, 32)),
])
def test_loaders_read_the_shared_copies(data_root, name, train, shape):
    dataset = load_dataset(name, data_root, train=train, download=False)
    assert len(dataset) > 1000
    image, label = dataset[0]
    assert image.shape == shape and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.max()) > 0.5
    assert 0 <= label < 10
    assert set(dataset.labels.tolist()) == set(range(10))


def test_cifar_train_25_is_the_dlg_frog(data_root):
    target = load_target("cifar10", 25, data_root, train=True)
    assert target.label == DATASETS["cifar10"].classes.index("frog")


def test_data_root_comes_from_the_environment(data_root, monkeypatch):
    monkeypatch.setenv("SOTERIA_DATA", str(data_root))
    assert len(load_dataset("mnist", train=False, download=False)) == 10000


def test_missing_dataset_is_one_line_naming_the_variable(tmp_path):
    missing = tmp_path / "empty"
    for download in (False, True):  # no network here: the download attempt fails too
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset("cifar10", missing, download=download)
        message = str(info.value)
        assert "SOTERIA_DATA" in message and str(missing) in message and "\n" not in message
    assert not missing.exists(), "a failed download must not leave folders behind"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_embedded_photograph_has_the_dataset_shape(name):
    target = embedded_image(name)
    assert tuple(target.image.shape) == DATASETS[name].shape
    assert 0.0 <= float(target.image.min()) and float(target.image.max()) <= 1.0
    assert float(target.image.std()) > 0.05  # a real picture, not a constant


def test_bad_target_ids(data_root):
    with pytest.raises(ValueError, match="out of range"):
        load_target("cifar10", 10**7, data_root)
    with pytest.raises(ValueError, match="target_id"):
        load_target("cifar10", -2, data_root)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("svhn", data_root)
