"""Datasets and target images (every chapter; the targets are introduced in chapters 1 and 2).

Images always leave this module as float tensors in ``[0, 1]`` with shape ``(C, H, W)``;
normalisation to a dataset's mean/std is explicit (:class:`Normalization`), never hidden in
a loader.

The data root comes from, in order: an explicit ``root`` argument (the CLI's ``--data_root``),
the ``SOTERIA_DATA`` environment variable, or ``~/.cache/soteria/data``. Files are read in
torchvision's on-disk layouts (``MNIST/raw/*-ubyte`` and ``cifar-10-batches-py/``). Only when
the root holds no copy does the loader try torchvision's ``download=True``; when that fails
too, :class:`DatasetNotFoundError` names the path and ``SOTERIA_DATA`` in one line.

CIFAR-10 batches are read directly from their pickles, so subsets of the official files
(whose checksums differ from torchvision's table) load as they are.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ENV_VAR = "SOTERIA_DATA"
DEFAULT_ROOT = Path("~/.cache/soteria/data").expanduser()


class DatasetNotFoundError(RuntimeError):
    """A dataset is neither on disk nor downloadable; the message is one line."""


class DatasetDamagedError(ValueError):
    """A dataset file is truncated, empty or inconsistent; the message names it and says what is wrong."""


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine map between [0, 1] pixels and a model's input space: ``(x - mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        view = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(view)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(view)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._shape(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._shape(x)
        return x * std + mean

    def box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of valid pixels in the normalised space, shaped like ``x``'s channels."""
        mean, std = self._shape(x)
        return (0 - mean) / std, (1 - mean) / std

    @classmethod
    def identity(cls, channels: int) -> "Normalization":
        return cls((0.0,) * channels, (1.0,) * channels)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    shape: tuple[int, int, int]
    num_classes: int
    normalization: Normalization
    classes: tuple[str, ...]
    title: str  # in prose and tables: "CIFAR-10"


DATASETS = {
    "mnist": DatasetInfo(
        "mnist", (1, 28, 28), 10, Normalization((0.1306637,), (0.3081078,)),
        tuple(str(d) for d in range(10)), "MNIST",
    ),
    "cifar10": DatasetInfo(
        "cifar10", (3, 32, 32), 10,
        Normalization((0.4914672, 0.4822617, 0.4467701), (0.2470322, 0.2434851, 0.2615879)),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"), "CIFAR-10",
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None


class ImageDataset(torch.utils.data.Dataset):
    """uint8 images held in memory; items are ``(float image in [0, 1], int label)``."""

    def __init__(self, info: DatasetInfo, images: torch.Tensor, labels: torch.Tensor):
        self.info = info
        self.images = images  # (N, C, H, W) uint8
        self.labels = labels  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index].float() / 255.0, int(self.labels[index])


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser().resolve()


def _mnist_files(root: Path, train: bool) -> tuple[Path, Path]:
    prefix = "train" if train else "t10k"
    raw = root / "MNIST" / "raw"
    return raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"


def _cifar_files(root: Path, train: bool) -> list[Path]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return [root / "cifar-10-batches-py" / n for n in names]


def _read_idx(path: Path, ndim: int, shape: tuple[int, ...] = ()) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x00000801 for labels, 0x00000803 for images) with
    ``ndim`` dimensions, the trailing ones equal to ``shape``."""
    data = path.read_bytes()
    if len(data) < 4 + 4 * ndim:
        raise DatasetDamagedError(f"{path}: {len(data)} bytes, too short for an IDX header")
    if data[:3] != b"\x00\x00\x08" or data[3] != ndim:
        raise DatasetDamagedError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
                                  f"(magic {data[:4].hex()})")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if shape and dims[1:] != shape:
        raise DatasetDamagedError(f"{path}: items of shape {dims[1:]}, expected {shape}")
    size = int(np.prod(dims))
    body = len(data) - 4 - 4 * ndim
    if body != size:
        raise DatasetDamagedError(f"{path}: the header announces {dims[0]} items ({size} bytes), "
                                  f"the file holds {body} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _checked(where: str, images: np.ndarray, labels: np.ndarray, classes: int) -> None:
    if len(images) != len(labels):
        raise DatasetDamagedError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DatasetDamagedError(f"{where}: no images")
    if labels.min() < 0 or labels.max() >= classes:
        raise DatasetDamagedError(f"{where}: labels outside 0..{classes - 1} "
                                  f"(found {int(labels.min())}..{int(labels.max())})")


def _load_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _mnist_files(root, train)
    x, y = _read_idx(images, 3, (28, 28)), _read_idx(labels, 1).astype(np.int64)
    _checked(f"{images} and {labels.name}", x, y, 10)
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise DatasetDamagedError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DatasetDamagedError(f"{path}: not a CIFAR-10 batch (expected a dict with 'data' and 'labels')")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetDamagedError(f"{path}: data of shape {data.shape} and type {data.dtype}, "
                                  "expected (N, 3072) unsigned bytes")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    _checked(str(path), data, labels, 10)
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [_read_cifar_batch(path) for path in _cifar_files(root, train)]
    return (torch.from_numpy(np.concatenate([b[0] for b in batches])),
            torch.from_numpy(np.concatenate([b[1] for b in batches])))


_FILES = {"mnist": _mnist_files, "cifar10": _cifar_files}
_READERS = {"mnist": _load_mnist, "cifar10": _load_cifar10}


def _present(name: str, root: Path, train: bool) -> bool:
    files = _FILES[name](root, train)
    return all(Path(f).is_file() for f in files)


def _download(name: str, root: Path) -> None:
    """Fetch the official files with torchvision; remove folders it created if that fails."""
    import torchvision

    top = root  # the outermost folder the download may create
    while not top.parent.exists():
        top = top.parent
    before = set(top.rglob("*")) if top.exists() else set()
    top_existed = top.exists()
    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises several types for network failures
        # leave the disk as it was: remove what the failed download created, deepest first
        created = set(top.rglob("*")) - before if top.exists() else set()
        if not top_existed and top.exists():
            created.add(top)
        for path in sorted(created, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            elif path.is_file():
                path.unlink()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetNotFoundError(
            f"{name} not found under {root} and download failed ({reason}); "
            f"set {ENV_VAR} or --data_root to a folder holding it in torchvision's layout"
        ) from None


def load_dataset(name: str, root: str | os.PathLike | None = None, train: bool = True,
                 download: bool = True) -> ImageDataset:
    """Load MNIST or CIFAR-10 (``train`` or test split) from the data root."""
    info = dataset_info(name)
    path = resolve_root(root)
    if not _present(name, path, train):
        if not download:
            raise DatasetNotFoundError(
                f"{name} not found under {path}; set {ENV_VAR} or --data_root to a folder "
                "holding it in torchvision's layout"
            )
        _download(name, path)
    images, labels = _READERS[name](path, train)
    return ImageDataset(info, images, labels)


@dataclass(frozen=True)
class Target:
    """One private example: ``image`` in [0, 1], shape (C, H, W), and its class label."""

    image: torch.Tensor
    label: int
    description: str


EMBEDDED_LABEL = 3  # the photograph is a cat: CIFAR-10 class 3 ("cat"); for MNIST simply digit 3


def embedded_image(name: str) -> Target:
    """A real photograph (scikit-image's ``chelsea``, a cat) resized to the dataset's shape.

    It lets ``--target_id=-1`` run with no dataset on disk, as the original repository's demo did.
    """
    from PIL import Image
    import skimage.data

    info = dataset_info(name)
    channels, height, width = info.shape
    photo = Image.fromarray(skimage.data.chelsea())
    side = min(photo.size)
    left, top = (photo.size[0] - side) // 2, (photo.size[1] - side) // 2
    photo = photo.crop((left, top, left + side, top + side)).resize((width, height), Image.BICUBIC)
    if channels == 1:
        photo = photo.convert("L")
    array = np.asarray(photo, dtype=np.float32).reshape(height, width, channels) / 255.0
    image = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
    return Target(image, EMBEDDED_LABEL, "embedded photograph (scikit-image 'chelsea', a cat)")


def load_target(name: str, target_id: int, root: str | os.PathLike | None = None,
                train: bool = True, download: bool = True) -> Target:
    """The image the client holds: ``target_id = -1`` is the embedded photograph, else an index."""
    if target_id == -1:
        return embedded_image(name)
    if target_id < -1:
        raise ValueError(f"target_id must be -1 (embedded image) or a non-negative index, got {target_id}")
    dataset = load_dataset(name, root, train=train, download=download)
    if target_id >= len(dataset):
        split = "train" if train else "test"
        raise ValueError(f"target_id {target_id} out of range: {name} {split} split has {len(dataset)} images")
    image, label = dataset[target_id]
    split = "train" if train else "test"
    return Target(image, label, f"{name} {split} #{target_id} ({info_class(name, label)})")


def info_class(name: str, label: int) -> str:
    return dataset_info(name).classes[label]
