"""SmolLM2 on the public protocol pruned by 2 processes, saved by both, evaluated by one.

    python benchmarks/multiprocess_smollm2.py --out benchmarks/results/multiprocess_smollm2_cpu.json

SparseGPT 50%, calibration ``shakespeare-calib`` 64 × 512 (seed 0), ``--mesh 2x1``: (a) two
processes with one CPU device each (``jax.distributed`` on a loopback coordinator), writing one
checkpoint together, which one process then evaluates on ``shakespeare-hamlet`` 32 × 512 with
``jaxprune eval``; (b) one process with two simulated devices, the same mesh. The single-device
reference is the one-shot table's 60.92 (``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from processes import CLI_PROCESS_FLAGS, last_json, run_processes  # noqa: E402

PRUNE = [
    sys.executable,
    "-m",
    "jaxprune.cli",
    "prune",
    "--model",
    "smollm2-135m",
    "--method",
    "sparsegpt",
    "--sparsity",
    "0.5",
    "--calib",
    "shakespeare-calib",
    "--nsamples",
    "64",
    "--seqlen",
    "512",
    "--mesh",
    "2x1",
    "--json",
]
EVAL = ["--data", "shakespeare-hamlet", "--nsamples", "32", "--seqlen", "512", "--json"]


def _json(proc) -> dict:
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return last_json(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "pruned")
        t0 = time.perf_counter()
        finished = run_processes([*PRUNE, *CLI_PROCESS_FLAGS, "--out", out], 2, 1, timeout=5400)
        two = {"prune": _json(finished[0]), "wall_seconds": time.perf_counter() - t0}
        evaluation = run_processes(
            [sys.executable, "-m", "jaxprune.cli", "eval", "--model", out, *EVAL], 1, 1, 5400
        )
        two["eval"] = _json(evaluation[0])
        t0 = time.perf_counter()
        one = run_processes([*PRUNE, "--eval", "shakespeare-hamlet"], 1, 2, timeout=5400)
        single = {"prune": _json(one[0]), "wall_seconds": time.perf_counter() - t0}
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, shared 2-core VM",
        "versions": {p: metadata.version(p) for p in ("jax", "jaxlib", "orbax-checkpoint")},
        "two_processes_one_device_each": two,
        "one_process_two_devices": single,
        "single_device_reference_ppl": 60.92,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if "process" not in k}))


if __name__ == "__main__":
    main()
