"""Atomic file writing: fsynced files, directories removed for good, checksums."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from jaxprune.core.files import sha256_file


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Deletes ``path``, again if a writer thread that was still finishing recreated part of it.

    A background writer interrupted by a signal can still create files after the last retry (its
    finalisation runs while the interpreter shuts down), so the removal is also registered to run
    at exit, after Python has joined its threads.
    """
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    for delay in (0.0, 0.05, 0.2, 1.0):
        time.sleep(delay)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return


def file_records(root: Path) -> dict[str, dict[str, Any]]:
    return {
        f.relative_to(root).as_posix(): {"size": f.stat().st_size, "sha256": sha256_file(f)}
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def check_extra_files(extra_files: Mapping[str, bytes]) -> dict[str, bytes]:
    for name, data in extra_files.items():
        if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name:
            raise ValueError(f"extra file name {name!r} must be a plain file name without folders")
        if "\\" in name:
            raise ValueError(f"extra file name {name!r} must not contain a backslash")
        if not isinstance(data, (bytes, bytearray)):
            raise ValueError(f"extra file {name!r} must be bytes, got {type(data).__name__}")
    return {name: bytes(data) for name, data in extra_files.items()}


def scratch_dir(target: Path, kind: str) -> Path:
    """A new hidden sibling of ``target`` for an unfinished save (``kind``: ``tmp`` or ``old``).

    Its name carries this process's id, so that :func:`sweep_abandoned` can tell the leftovers
    of a process that was killed (``kill -9``, a power cut) from a save still running elsewhere.
    """
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))


def sweep_abandoned(target: Path) -> list[Path]:
    """Removes the scratch directories of saves to ``target`` whose process no longer exists."""
    removed = []
    for path in target.parent.glob(f".{target.name}.*-*-*"):
        kind, _, rest = path.name[len(target.name) + 2 :].partition("-")
        pid = rest.partition("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not _alive(int(pid)):
            remove_tree(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Terminated(Exception):
    """SIGTERM arrived during a save (raised so that the save cleans up before exiting)."""


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` instead of killing the process.

    SIGINT already raises ``KeyboardInterrupt``; with both as exceptions, the save's cleanup runs
    whichever way the user stops it. Only the main thread can install handlers; elsewhere (and
    where a handler other than the default is installed) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def handler(signum, frame):
        raise Terminated("terminated (SIGTERM) during a checkpoint save")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back for the block (a second Ctrl-C must not stop a cleanup);
    they are delivered when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
