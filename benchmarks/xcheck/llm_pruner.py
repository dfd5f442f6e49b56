"""LLM-Pruner (block-wise, element1): jaxprune vs the original code on the same calibration windows.

Original (imported from a checkout, never copied): horseee/LLM-Pruner,
https://github.com/horseee/LLM-Pruner, commit 128a07d977f9b205d60ab14cfbc6a78f8a8e39d2
(``--repo-dir``): ``llama3.py``'s ``main`` (the authors' script for grouped-query LLaMA models,
which take SmolLM2's layout) with the options of its documented commands: ``--block_wise
--pruner_type taylor --taylor param_first`` (element1) ``--num_examples 10``, blocks
``--block_*_layer_start 4 --block_*_layer_end 28`` (4–29 of LLaMA-7B's 32, scaled to 30).

What the driver changes around it, not in it: ``llama3.get_examples`` (bookcorpus) returns our
10 × 64 calibration windows; ``llama3.LlamaForCausalLM`` loads float32 on the CPU (the script asks
for float16 with ``device_map="auto"``) without a KV cache in its outputs; ``llama3.PPLMetric``
(WikiText-2 / PTB) is where the driver takes the pruned model and scores it on our Hamlet windows.
It runs in a temporary working directory (the script writes ``prune_log/``).

``--pruning-ratio`` is the original's per-block ratio; jaxprune's ``--sparsity`` is the fraction
of non-embedding parameters removed overall (0.2 over blocks 4–27 of 30 = 0.25 per block). The
kept MLP channels and key/value heads of each block are matched to the dense weights and
compared with jaxprune's as overlap (|kept by both| / |kept|). When the original prunes no
attention (see :func:`prunes_kv_heads`), the row ``jaxprune_mlp_only`` is the like-for-like
perplexity: the dense model shrunk by jaxprune to jaxprune's own kept MLP channels with every head
kept, so the two perplexities differ only by the MLP channels each side chose.

    python -m benchmarks.xcheck.llm_pruner --repo-dir /tmp/LLM-Pruner \\
        --out benchmarks/results/xcheck_llm_pruner_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
import types
from typing import Any

import numpy as np

from benchmarks._common import import_original, write_json
from benchmarks.xcheck import _protocol as protocol

LLM_PRUNER = ("https://github.com/horseee/LLM-Pruner", "128a07d977f9b205d60ab14cfbc6a78f8a8e39d2")


def prunes_kv_heads(tm, args) -> bool:
    """Whether the original's per-block ratio removes at least one whole key/value head.

    ``metapruner.prune_local`` removes ``n_pruned // head_dim`` key/value groups of ``k_proj``
    and fails (``torch.cat`` of an empty list) when that is 0: with SmolLM2's 3 key/value heads
    any ratio below 1/3. Then the driver gives the original no attention block to prune (its
    ``--block_attention_layer_end`` equal to the start) and compares the MLP channels only.
    """
    config = tm.load().config
    channels = config.num_key_value_heads * config.head_dim
    removed = channels - int(channels * (1 - args.pruning_ratio))
    return removed // config.head_dim >= 1


def mlp_only(pre: Any, keeps: list[dict], evalw: np.ndarray) -> dict[str, Any]:
    """Hamlet ppl of the dense model shrunk to ``keeps``' MLP channels, every head kept."""
    import jaxprune as jp
    from jaxprune.structured.allocate import count_params
    from jaxprune.structured.groups import BlockKeep
    from jaxprune.structured.shrink import shrink

    widths = pre.model.config.layer_widths
    blocks = {
        i: dataclasses.replace(BlockKeep.full(widths(i)), mlp=tuple(keep["mlp"]))
        for i, keep in enumerate(keeps)
    }
    model, params = shrink(pre.model, pre.params, blocks)
    return {
        "ppl": jp.perplexity(model, params, evalw).ppl,
        "params_after": count_params(model, params),
    }


def original_llm_pruner(args, tm, calib, evalw) -> dict[str, Any]:
    """Run the original ``llama3.main``; Hamlet ppl and each block's kept channels / KV heads."""
    import torch

    script = import_original(args.repo_dir, "llama3", marker="llama3.py")
    dense = tm.load()
    base = script.LlamaForCausalLM
    out: dict[str, Any] = {}

    class Float32(base):
        @classmethod
        def from_pretrained(cls, path, **_ignored):
            model = base.from_pretrained(path, torch_dtype=torch.float32)
            # No KV cache in the outputs: the dependency tracer flattens them and can only
            # follow tensors (transformers 5 returns a Cache object when use_cache is on).
            model.config.use_cache = False
            return model

    def score(model, *_a, **_k):
        out.update(protocol.torch_perplexity(model.eval(), evalw))
        out["model"] = model
        return {}

    script.LlamaForCausalLM = Float32
    script.get_examples = lambda *_a, **_k: torch.as_tensor(calib.astype(np.int64))
    script.PPLMetric = score
    options = types.SimpleNamespace(
        base_model=tm.hf_dir,
        save_ckpt_log_name="xcheck",
        pruning_ratio=args.pruning_ratio,
        pruner_type="taylor",
        taylor="param_first",
        grouping_strategy="sum",
        block_wise=True,
        channel_wise=False,
        layer_wise=False,
        block_attention_layer_start=args.block_start,
        block_attention_layer_end=args.block_end if prunes_kv_heads(tm, args) else args.block_start,
        block_mlp_layer_start=args.block_start,
        block_mlp_layer_end=args.block_end,
        iterative_steps=1,
        global_pruning=False,
        num_examples=len(calib),
        device="cpu",
        eval_device="cpu",
        test_before_train=False,
        test_after_train=False,
        save_model=False,
        seed=42,
        max_seq_len=128,
        temperature=1.0,
        top_p=0.95,
    )
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        start = time.perf_counter()
        try:
            script.main(options)
        finally:
            os.chdir(cwd)
    pruned = out.pop("model")
    keeps = []
    for d, p in zip(dense.model.layers, pruned.model.layers, strict=True):
        head_dim = d.self_attn.head_dim
        keeps.append(
            {
                "mlp": protocol.kept_rows(d.mlp.gate_proj.weight, p.mlp.gate_proj.weight),
                "kv_heads": protocol.kept_rows(
                    d.self_attn.k_proj.weight, p.self_attn.k_proj.weight, head_dim
                ),
                "heads": len(p.self_attn.q_proj.weight) // head_dim,
            }
        )
    params = sum(x.numel() for n, x in pruned.named_parameters() if "embed" not in n)
    return {
        **out,
        "seconds": time.perf_counter() - start,
        "keeps": keeps,
        "params": params,
        "attention_pruned": prunes_kv_heads(tm, args),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of horseee/LLM-Pruner")
    parser.add_argument("--sparsity", type=float, default=0.2, help="jaxprune: overall removed")
    parser.add_argument("--pruning-ratio", type=float, default=0.25, help="original: per block")
    parser.add_argument("--block-start", type=int, default=4)
    parser.add_argument("--block-end", type=int, default=28, help="exclusive, as the original's")
    protocol.add_protocol_args(parser, nsamples=10)
    parser.set_defaults(seqlen=64)
    args = parser.parse_args()
    import_original(args.repo_dir, "llama3", marker="llama3.py")  # refuse a wrong checkout

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, _ = protocol.windows(pre, args)
    evalw = protocol.windows(pre, argparse.Namespace(**{**vars(args), "seqlen": 512}))[1]
    tm = protocol.TorchModel(pre, args.hf_dir, "sdpa")
    recipe = jp.StructuredRecipe(
        method="llm-pruner",
        importance="element1",
        sparsity=args.sparsity,
        block_range=(args.block_start, args.block_end),
    )
    ours = protocol.jaxprune_structured(
        pre,
        calib,
        evalw,
        recipe,
        lambda k: {"mlp": list(k.mlp), "kv_heads": list(k.kv_heads), "heads": len(k.heads)},
    )
    theirs = original_llm_pruner(args, tm, calib, evalw)
    doc = {
        "what": f"{args.model}: jaxprune's LLM-Pruner (element1) vs the original llama3.py",
        **protocol.provenance(LLM_PRUNER, args),
        "jaxprune": ours,
        "original_result": theirs,
        "overlap_mlp_channels": protocol.overlap(ours["keeps"], theirs["keeps"], "mlp"),
        "overlap_kv_heads": protocol.overlap(ours["keeps"], theirs["keeps"], "kv_heads"),
    }
    if not theirs["attention_pruned"]:
        doc["jaxprune_mlp_only"] = mlp_only(pre, ours["keeps"], evalw)
        print({"jaxprune_mlp_only": doc["jaxprune_mlp_only"]}, flush=True)
    write_json(args.out, doc)
    print({k: doc[k] for k in ("overlap_mlp_channels", "overlap_kv_heads")}, flush=True)


if __name__ == "__main__":
    main()
