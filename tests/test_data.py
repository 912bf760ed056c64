"""Datasets: the shared copies load, a missing one is one line, a damaged file is named."""
import pickle
import shutil

import numpy as np
import pytest
import torch
import torchvision

from soteria_lib.data import (DATASETS, DatasetDamagedError, DatasetNotFoundError, embedded_image, load_dataset,
                              load_target)


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


def test_a_failed_download_leaves_no_folder_or_file_behind(tmp_path, monkeypatch):
    def half_a_download(root, train, download):
        raw = tmp_path / "cache" / "deep" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte.gz.part").write_bytes(b"\x1f\x8b")
        raise RuntimeError("connection reset")

    monkeypatch.setattr(torchvision.datasets, "MNIST", half_a_download)
    with pytest.raises(DatasetNotFoundError, match="connection reset"):
        load_dataset("mnist", tmp_path / "cache" / "deep")
    assert list(tmp_path.iterdir()) == []


def _mnist_copy(data_root, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(data_root / "MNIST" / "raw" / name, raw / name)
    return raw


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


def _retitle(path, count):  # the header's item count, the body unchanged
    data = bytearray(path.read_bytes())
    data[4:8] = count.to_bytes(4, "big")
    path.write_bytes(bytes(data))


def _label(path, value):
    data = bytearray(path.read_bytes())
    data[8] = value
    path.write_bytes(bytes(data))


MNIST_DAMAGE = [
    ("t10k-images-idx3-ubyte", lambda p: _truncate(p, 0), "too short for an IDX header"),
    ("t10k-images-idx3-ubyte", lambda p: _truncate(p, 1000), "the file holds 984 bytes"),
    ("t10k-labels-idx1-ubyte", lambda p: p.write_bytes(b"\x1f\x8b\x08\x00" + p.read_bytes()[4:]), "magic 1f8b0800"),
    ("t10k-labels-idx1-ubyte", lambda p: _truncate(p, 8 + 9_999), "the header announces 10000 items"),
    ("t10k-labels-idx1-ubyte", lambda p: (_truncate(p, 8 + 9_999), _retitle(p, 9_999)), "10000 images but 9999 labels"),
    ("t10k-labels-idx1-ubyte", lambda p: _label(p, 12), "labels outside 0..9"),
]


@pytest.mark.parametrize("name, damage, needle", MNIST_DAMAGE)
def test_damaged_mnist_files_are_named_with_what_is_wrong(data_root, tmp_path, name, damage, needle):
    raw = _mnist_copy(data_root, tmp_path)
    damage(raw / name)
    with pytest.raises(DatasetDamagedError) as info:
        load_dataset("mnist", tmp_path / "data", train=False, download=False)
    message = str(info.value)
    assert needle in message and name in message and "\n" not in message, message


def _cifar_copy(data_root, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    shutil.copytree(data_root / "cifar-10-batches-py", folder)
    return folder / "test_batch"


def _repickle(path, change):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    change(batch)
    path.write_bytes(pickle.dumps(batch))


CIFAR_DAMAGE = [
    (lambda p: p.write_bytes(b""), "not a readable CIFAR-10 batch"),
    (lambda p: _truncate(p, 5000), "not a readable CIFAR-10 batch"),
    (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "expected a dict with 'data' and 'labels'"),
    (lambda p: _repickle(p, lambda b: b.update(labels=b["labels"][:-1])), "1017 images but 1016 labels"),
    (lambda p: _repickle(p, lambda b: b.update(data=b["data"][:, :100])), "expected (N, 3072) unsigned bytes"),
    (lambda p: _repickle(p, lambda b: b["labels"].__setitem__(0, -1)), "labels outside 0..9"),
    (lambda p: _repickle(p, lambda b: b.update(data=np.zeros((0, 3072), np.uint8), labels=[])), "no images"),
]


@pytest.mark.parametrize("damage, needle", CIFAR_DAMAGE)
def test_damaged_cifar_files_are_named_with_what_is_wrong(data_root, tmp_path, damage, needle):
    batch = _cifar_copy(data_root, tmp_path)
    damage(batch)
    with pytest.raises(DatasetDamagedError) as info:
        load_dataset("cifar10", tmp_path / "data", train=False, download=False)
    message = str(info.value)
    assert needle in message and str(batch) in message and "\n" not in message, message


def test_a_damaged_file_is_one_line_from_the_command_line(data_root, tmp_path, capsys):
    from processes import run_main
    from soteria_lib import reconstruct

    raw = _mnist_copy(data_root, tmp_path)
    _truncate(raw / "t10k-labels-idx1-ubyte", 100)
    args = ["--attack=gs", "--dataset=mnist", "--target_id=0", f"--data_root={tmp_path / 'data'}",
            f"--output={tmp_path / 'out'}", "--no_progress"]
    assert run_main(reconstruct.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t10k-labels-idx1-ubyte" in err[0], err
    assert not (tmp_path / "out").exists()
