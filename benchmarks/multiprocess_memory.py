"""Host memory per process of one prune run by 1, 2 and 4 processes over the same 8 devices.

    python benchmarks/multiprocess_memory.py --out benchmarks/results/multiprocess_memory_cpu.json

A random LLaMA-shaped model (252 MB of float32 params) is written once as a Hugging Face
directory; each run reads it by slices onto a 1x8 mesh (kernels split 8 ways over ``model``) and
prunes it with SparseGPT at 50%. Every process has ``8 / N`` simulated CPU devices, so what its
devices hold is host memory too; the peak resident set (``ru_maxrss``) of each process is
recorded at the start, after loading and at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from processes import last_json, multiprocess_check, run_processes  # noqa: E402

SHAPES = {
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "vocab_size": 8192,
}
RUNS = ((1, 8), (2, 4), (4, 2))


def write_model(directory: Path) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPES, tie_word_embeddings=False))
    model.save_pretrained(directory)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        param_bytes = write_model(model_dir)
        runs = []
        for processes, devices in RUNS:
            argv = multiprocess_check(
                "--mesh",
                "1x8",
                "--hf",
                str(model_dir),
                "--recipes",
                "sparsegpt 0.5",
                "--out",
                tmp,
            )
            finished = run_processes(argv, processes, devices, timeout=args.timeout)
            for proc in finished:
                if proc.returncode:
                    raise SystemExit(proc.stderr[-3000:])
            per_process = [last_json(p.stdout) for p in finished]
            runs.append(
                {"processes": processes, "devices_per_process": devices, "per_process": per_process}
            )
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, shared 2-core VM",
        "versions": {p: metadata.version(p) for p in ("jax", "jaxlib", "orbax-checkpoint")},
        "model": {**SHAPES, "param_bytes": param_bytes, "dtype": "float32"},
        "mesh": "1x8",
        "recipe": "sparsegpt 0.5, 8 windows x 16 tokens",
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
