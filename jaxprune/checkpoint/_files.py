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


class Interrupts:
    """SIGINT and SIGTERM recorded during a save, to be acted on at its safe points.

    Python raises ``KeyboardInterrupt`` at whatever bytecode runs when Ctrl-C arrives; during a
    save that can be a garbage-collection callback of JAX or Orbax's event loop, where the
    exception is printed as "ignored" and lost — the save then finished and the program went on
    as if nothing had been pressed. Recorded instead, the signal is raised by :meth:`check`
    between the save's steps, from our own code, every time.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def record(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            os.write(2, b"jaxprune: interrupted; stopping the save at its next step\n")

    def check(self) -> None:
        """Raises ``KeyboardInterrupt`` (SIGINT) or :class:`Terminated` (SIGTERM) if one came."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt("the save was stopped; nothing was left half-written")
        if self.signum is not None:
            raise Terminated("terminated (SIGTERM) during a checkpoint save")


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[Interrupts]:
    """Inside the block SIGINT and SIGTERM are recorded, not raised (see :class:`Interrupts`).

    A signal the block did not act on (it came after the last :meth:`Interrupts.check`, once the
    save was complete) is raised when the block ends, so the program still stops. Only the main
    thread can install handlers; elsewhere, and for a signal that already has a handler other
    than Python's default, nothing changes.
    """
    pending = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    previous = {sig: signal.getsignal(sig) for sig in defaults}
    ours = [sig for sig, default in defaults.items() if previous[sig] in (default, None)]
    for sig in ours:
        signal.signal(sig, pending.record)
    try:
        yield pending
    finally:
        for sig in ours:
            signal.signal(sig, previous[sig])
    if pending.signum == signal.SIGINT:
        raise KeyboardInterrupt("the save completed before the interrupt; the checkpoint is whole")
    if pending.signum is not None:
        raise Terminated("terminated (SIGTERM) after the save completed; the checkpoint is whole")
