"""Starting several local JAX processes that form one multi-process run (loopback only, bounded).

Each process gets ``devices`` simulated CPU devices (``--xla_force_host_platform_device_count``)
and the coordinator address ``127.0.0.1:PORT`` of a free port; the processes exchange data through
JAX's CPU collectives (Gloo). A process that has not finished after ``timeout`` seconds is killed,
together with the others.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The flags that make each process one of a multi-process run, filled in by run_processes:
# ``jaxprune`` commands' and ``multiprocess_check.py``'s.
CLI_PROCESS_FLAGS = (
    "--coordinator",
    "{coordinator}",
    "--num-processes",
    "{processes}",
    "--process-id",
    "{id}",
)
CHECK_PROCESS_FLAGS = (
    "--processes",
    "{processes}",
    "--id",
    "{id}",
    "--coordinator",
    "{coordinator}",
)


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(devices: int) -> dict[str, str]:
    path = os.pathsep.join(
        [str(ROOT), str(ROOT / "tests" / "helpers"), os.environ.get("PYTHONPATH", "")]
    )
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONPATH": path,
        "JAX_PLATFORMS": "cpu",
    }


def run_processes(
    argv: Sequence[str], processes: int, devices: int, timeout: float = 300
) -> list[Finished]:
    """Runs ``argv`` in ``processes`` processes; ``{coordinator}``, ``{processes}`` and ``{id}``
    in the arguments are replaced by the address, the count and each process's index."""
    coordinator = f"127.0.0.1:{free_port()}"
    env = environment(devices)
    running = []
    for index in range(processes):
        args = [a.format(coordinator=coordinator, processes=processes, id=index) for a in argv]
        running.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    deadline = time.monotonic() + timeout
    finished = []
    try:
        for proc in running:
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))
            finished.append(Finished(proc.returncode, out, err))
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return finished


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "helpers" / script), *args]


def multiprocess_check(*args: str) -> list[str]:
    """``multiprocess_check.py`` as one process of a run of ``run_processes``, with ``args``."""
    return python("multiprocess_check.py", *CHECK_PROCESS_FLAGS, *args)


def last_json(stdout: str) -> dict:
    """The last JSON object a process printed on a line of its own."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
