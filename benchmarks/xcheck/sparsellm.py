"""SparseLLM: jaxprune vs the original code on the same windows (SmolLM2 at 70% by default).

Original (imported from a checkout, never copied): BaiTheBest/SparseLLM,
https://github.com/BaiTheBest/SparseLLM, commit 27fe26a0caea5c42e91cbeddaee9711be6e17205
(``--repo-dir``): ``model_utils.py``'s ``llama_sparsellm`` unmodified, with ``llama_main.py``'s
defaults (percdamp 0.01, blocksize 128, no quantisation, every layer). The driver calls it with
our calibration windows as its ``dataloader`` and ``dev=cpu``; every decoder layer gets the rotary
embeddings its loop does not pass (``_protocol.with_layer_context``). The torch model is
transformers' LLaMA on the ``jaxprune export`` in float32, as on jaxprune's side, and the
original's own float16 casts (``.half()``, ``.to(dtype=torch.float16)``, written for a float16
LLaMA-7B) keep float32 while it runs (``_protocol.float16_casts_kept_float32``): in float16 its
activation update overflows on SmolLM2 (``beta * W_down^T Y`` reaches 743,228 at block 11, where
the MLP's output carries a 24,288 massive activation, and 423,585 / 114,842 at blocks 28 / 29;
float16 ends at 65,504, measured on 4 calibration windows), then ``pinverse`` fails on
non-finite values. Its opt-epoch rule (one epoch
for layers 1, 30 and 31, LLaMA-7B's indices) runs unchanged: of SmolLM2's 30 layers only layer 1
gets one epoch. Its own hyper-parameters
(α, β, γ, iterations) are the ones hard-coded in that function; jaxprune's are its defaults.
Perplexity on both sides: the same Hamlet windows. The JSON also keeps the SparseGPT error the
original prints for each pruning pass (``original_errors``: ``"block.linear"`` → one per pass),
which shows where its iterates grow; ``sparsellm_sstep.py`` measures why they can.

It is slow on a CPU: on SmolLM2 at 64 × 512, beside one other job, jaxprune's side took 25 min and
the original's 48 min. ``--nsamples`` and ``--seqlen`` shrink a run (the row records them).

    python -m benchmarks.xcheck.sparsellm --repo-dir /tmp/SparseLLM --sparsity 0.7 \\
        --out benchmarks/results/xcheck_sparsellm_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

from benchmarks._common import import_original, write_json
from benchmarks.xcheck import _protocol as protocol

SPARSELLM = ("https://github.com/BaiTheBest/SparseLLM", "27fe26a0caea5c42e91cbeddaee9711be6e17205")

# The original's learning rate of its gradient steps on s, as ``model_utils.py`` writes it.
S_LR_LITERAL = "s_learning_rate = 0.01"


def import_model_utils(repo_dir: str, s_lr: float | None) -> Any:
    """The original ``model_utils``: unmodified when ``s_lr`` is None, else its text from the
    checkout with :data:`S_LR_LITERAL`'s 0.01 set to ``s_lr`` (an ablation: 0 leaves ``s`` at
    its entry value, every other line running as written), executed as a module beside it.
    Refuses a checkout whose text does not hold the literal exactly once."""
    utils = import_original(repo_dir, "model_utils")
    if s_lr is None:
        return utils
    rewrites = {S_LR_LITERAL: (1, f"s_learning_rate = {float(s_lr)!r}")}
    return protocol.with_literals_rewritten(utils, rewrites, "model_utils_s_lr")


def recorded_jaxprune(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """jaxprune's side of an earlier run of this driver (``--jaxprune-from``), refused unless that
    run used the same model, sparsity and windows."""
    data = json.loads(Path(path).read_text())
    keys = ("model", "sparsity", "nsamples", "seqlen", "eval_nsamples", "seed", "bos")
    differ = [k for k in keys if data["args"].get(k) != str(getattr(args, k))]
    if differ:
        raise SystemExit(f"--jaxprune-from {path}: another run ({', '.join(differ)} differ)")
    row = data["rows"][0]
    return {
        "ppl": row["jaxprune_ppl"],
        "sparsity": row["jaxprune_sparsity"],
        "seconds": row["jaxprune_seconds"],
    }


def original_options(nsamples: int, sparsity: float) -> types.SimpleNamespace:
    """The ``args`` ``llama_sparsellm`` reads: ``llama_main.py``'s defaults (percdamp 0.01,
    blocksize 128, no quantisation, every layer, ``true_sequential`` off), unstructured."""
    return types.SimpleNamespace(
        nsamples=nsamples,
        sparsity=sparsity,
        prunen=0,
        prunem=0,
        percdamp=0.01,
        blocksize=128,
        wbits=16,
        minlayer=-1,
        maxlayer=1000,
        prune_only="",
        invert=False,
        true_sequential=False,
    )


def original_sparsellm(args, tm, calib, evalw) -> dict[str, Any]:
    """The original ``llama_sparsellm`` on a fresh torch model; its ppl and sparsity."""
    import torch

    utils = import_model_utils(args.repo_dir, args.s_lr)
    model = tm.load()
    model.seqlen = args.seqlen
    options = original_options(len(calib), args.sparsity)
    windows = protocol.loader_batches(calib)

    printed = io.StringIO()

    def prune() -> None:
        with protocol.float16_casts_kept_float32(), contextlib.redirect_stdout(_Tee(printed)):
            utils.llama_sparsellm(model, windows, torch.device("cpu"), options)

    result = protocol.original_unstructured(model, calib, evalw, prune)
    return {**result, "errors": pass_errors(printed.getvalue())}


class _Tee(io.TextIOBase):
    """Writes to ``sink`` and to the real stdout (the original's progress stays visible)."""

    def __init__(self, sink: io.StringIO):
        self.sink, self.out = sink, sys.stdout

    def write(self, text: str) -> int:
        self.out.write(text)
        return self.sink.write(text)


def pass_errors(printed: str) -> dict[str, list[float]]:
    """The original's printed SparseGPT errors, ``"block.linear"`` → one per pruning pass.

    ``llama_sparsellm`` prints ``"<block> <linear>"`` before each ``fasterprune`` and that prints
    ``"error <value>"``: the attention linears get one pass, the MLP's one per opt epoch, so the
    lists show where its iterates grow (the error is against the auxiliary targets it refits to).
    """
    errors: dict[str, list[float]] = {}
    current = None
    for line in printed.splitlines():
        named = re.fullmatch(r"(\d+) (\S+)", line.strip())
        if named:
            current = f"{named.group(1)}.{named.group(2)}"
        elif line.startswith("error ") and current is not None:
            errors.setdefault(current, []).append(float(line.split()[1]))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of BaiTheBest/SparseLLM")
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument(
        "--s-lr",
        type=float,
        help="ablation: the learning rate of the original's gradient steps on s (its code: 0.01)",
    )
    parser.add_argument(
        "--jaxprune-from",
        type=Path,
        help="take jaxprune's side from this earlier output of the driver (same windows)",
    )
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    if args.s_lr is not None and not args.s_lr >= 0:
        parser.error(f"--s-lr must be 0 or more, got {args.s_lr}")
    import_model_utils(args.repo_dir, args.s_lr)  # refuse a wrong checkout before loading
    # jaxprune's side of an earlier run, read (and refused if another run's) before loading
    recorded = None if args.jaxprune_from is None else recorded_jaxprune(args.jaxprune_from, args)

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, "sdpa")
    recipe = jp.Recipe(
        method="sparsellm", sparsity=args.sparsity, nsamples=args.nsamples, seqlen=args.seqlen
    )
    ours = recorded or protocol.jaxprune_unstructured(pre, calib, evalw, recipe)
    theirs = original_sparsellm(args, tm, calib, evalw)
    row = protocol.comparison_row(f"sparsellm:{args.sparsity}", ours, theirs)
    write_json(
        args.out,
        {
            "what": f"{args.model}: jaxprune's SparseLLM vs the original llama_sparsellm",
            **protocol.provenance(SPARSELLM, args),
            "rows": [row],
            "original_errors": theirs["errors"],
        },
    )
    print(row, flush=True)


if __name__ == "__main__":
    main()
