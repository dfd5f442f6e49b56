"""Pruned SmolLM2-135M as files people run: adaptive vs uniform structure, dense vs sparse storage.

Structured rows (LLM-Pruner and FLAP at the given sparsities, each adaptive — the method's own
widths — and ``uniform=True`` — every block the same widths, MLP a multiple of 64): the model is
pruned with the library's defaults (calibration as ``jaxprune prune``), exported with
``jaxprune.export_model`` in the format chosen automatically (``hf`` for equal blocks, ``gguf``
for uneven ones) and measured as loaded from the export:

- perplexity of the pruned params in jaxprune, and of the export as loaded back: by transformers'
  ``AutoModelForCausalLM`` (``hf``) or by jaxprune's GGUF loader (``gguf``); Hamlet 32 × 512;
- parameters (total and without the embedding) and the export's size on disk (float32);
- tokens/s in transformers on this CPU: prefill (4 × 512 tokens, one forward) and greedy decoding
  (64 new tokens after a 32-token prompt, batch 1, KV cache), the minimum time over ``--reps``,
  as a ratio to the dense model measured in the same run. An uneven model runs in transformers'
  own ``LlamaForCausalLM`` whose linears are resized per block (``num_key_value_groups`` per
  layer): transformers' configs hold one width for all blocks, its modules do not need to.

Sparse rows (SparseGPT 50% and 2:4): the same model exported dense (``hf``) and as
compressed-tensors (bitmask / 2:4); sizes on disk, and the compressed-tensors package's
decompression compared with our weights.

    python benchmarks/export_table.py --out benchmarks/results/export_table_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json

import jaxprune as jp
from jaxprune.models.export import hf_config, hf_tensors
from jaxprune.models.export_formats import check_format, export_model

STRUCTURED = ["llm-pruner:0.2", "llm-pruner:0.5", "flap:0.2", "flap:0.5"]
SPARSE = ["sparsegpt:0.5", "sparsegpt:2:4"]


def disk_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*"))


def param_counts(params: Any, embed_key: str = "embed_tokens") -> dict[str, int]:
    import jax

    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    total = sum(int(np.prod(v.shape)) for _, v in flat)
    embed = sum(int(np.prod(v.shape)) for k, v in flat if embed_key in jax.tree_util.keystr(k))
    return {"total": total, "non_embedding": total - embed}


def torch_model(pre: jp.Pretrained, dense_config: Any) -> Any:
    """transformers' ``LlamaForCausalLM`` with ``pre``'s weights, linears resized per block."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{k: v for k, v in hf_config(dense_config).items() if k != "model_type"})
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    tensors = {
        k: torch.from_numpy(np.array(v, np.float32))
        for k, v in hf_tensors(pre.params, pre.model.config).items()
    }
    head_dim = config.head_dim
    for i, layer in enumerate(model.model.layers):
        names = {
            "self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
            "mlp": ("gate_proj", "up_proj", "down_proj"),
        }
        for part, projs in names.items():
            module = getattr(layer, part)
            for proj in projs:
                name = f"model.layers.{i}.{part}.{proj}"
                out, inp = tensors[f"{name}.weight"].shape
                bias = f"{name}.bias" in tensors  # FLAP's compensation biases
                setattr(module, proj, torch.nn.Linear(inp, out, bias=bias, device="meta"))
        q = tensors[f"model.layers.{i}.self_attn.q_proj.weight"].shape[0] // head_dim
        kv = tensors[f"model.layers.{i}.self_attn.k_proj.weight"].shape[0] // head_dim
        layer.self_attn.num_key_value_groups = q // kv
    if config.tie_word_embeddings:
        tensors.setdefault("lm_head.weight", tensors["model.embed_tokens.weight"])
    model.load_state_dict(tensors, strict=True, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)  # buffers off meta
    model.eval()
    return model


def torch_perplexity(model: Any, windows: np.ndarray) -> float:
    import torch

    nll, count = 0.0, 0
    with torch.no_grad():
        for row in windows:
            ids = torch.as_tensor(row[None].astype(np.int64))
            logits = model(ids, use_cache=False).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(nll / count)


def torch_speed(models: dict[str, Any], windows: np.ndarray, reps: int) -> dict[str, dict]:
    """Prefill and decode tokens/s of each model in transformers, measured interleaved.

    The models take turns within every repetition (so load on the machine hits them alike) and
    the minimum time over ``reps`` is kept.
    """
    import torch

    batch = torch.as_tensor(windows[:4].astype(np.int64))
    prompt = torch.as_tensor(windows[:1, :32].astype(np.int64))
    times = {name: {"prefill": [], "decode": []} for name in models}
    with torch.no_grad():
        for model in models.values():
            model(batch[:, :64], use_cache=False)  # warm-up
        for _ in range(reps):
            for name, model in models.items():
                start = time.perf_counter()
                model(batch, use_cache=False)
                times[name]["prefill"].append(time.perf_counter() - start)
                start = time.perf_counter()
                out = model.generate(
                    prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0
                )
                times[name]["decode"].append(time.perf_counter() - start)
                assert out.shape[1] == 32 + 64
    return {
        name: {
            "prefill_tokens_per_s": batch.numel() / min(t["prefill"]),
            "decode_tokens_per_s": 64 / min(t["decode"]),
        }
        for name, t in times.items()
    }


def structured_row(
    dense: jp.Pretrained, dense_torch: Any, spec: str, uniform: bool, evalw, args
) -> dict[str, Any]:
    method, _, sparsity = spec.partition(":")
    recipe = jp.StructuredRecipe(method=method, sparsity=float(sparsity), uniform=uniform)
    start = time.perf_counter()
    result = jp.prune_pretrained(dense, recipe, progress=False)
    seconds = time.perf_counter() - start
    pruned = result.pruned
    ours = jp.perplexity(pruned.model, pruned.params, evalw, progress=False).ppl
    with tempfile.TemporaryDirectory() as tmp:
        fmt = check_format(None, pruned.model.config)  # gguf is one file: name it so
        target = Path(tmp) / ("export.gguf" if fmt == "gguf" else "export")
        summary = export_model(target, pruned.model, pruned.params, pruned.tokenizer)
        target = Path(summary["path"])
        row = {
            "method": method,
            "sparsity": float(sparsity),
            "structure": "uniform" if uniform else "adaptive",
            "prune_seconds": seconds,
            "format": summary["format"],
            "file_bytes": disk_bytes(target),
            "params": param_counts(pruned.params),
            "ppl_jaxprune": ours,
        }
        if summary["format"] == "hf":
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(str(target)).eval()
            row["ppl_export"], row["export_loaded_by"] = (
                torch_perplexity(model, evalw),
                "transformers",
            )
        else:
            back = jp.load_pretrained(str(target))
            row["ppl_export"] = jp.perplexity(back.model, back.params, evalw, progress=False).ppl
            row["export_loaded_by"] = "jaxprune gguf loader"
            model = torch_model(pruned, dense.model.config)
            row["ppl_transformers_resized"] = torch_perplexity(model, evalw)
        row["export_vs_jaxprune"] = row["ppl_export"] / ours - 1
        speed = torch_speed({"dense": dense_torch, "pruned": model}, evalw, args.reps)
        row["speed"] = {
            **speed,
            "prefill_ratio": speed["pruned"]["prefill_tokens_per_s"]
            / speed["dense"]["prefill_tokens_per_s"],
            "decode_ratio": speed["pruned"]["decode_tokens_per_s"]
            / speed["dense"]["decode_tokens_per_s"],
        }
    print(json.dumps({k: v for k, v in row.items() if k != "params"}), flush=True)
    return row


def sparse_row(dense: jp.Pretrained, spec: str) -> dict[str, Any]:
    from compressed_tensors.compressors import ModelCompressor

    method, _, target = spec.partition(":")
    recipe = jp.Recipe(method=method, sparsity=target if ":" in target else float(target))
    result = jp.prune_pretrained(dense, recipe, progress=False)
    pruned = result.pruned
    with tempfile.TemporaryDirectory() as tmp:
        sizes, kinds = {}, {}
        for fmt in ("hf", "compressed-tensors"):
            summary = export_model(Path(tmp) / fmt, pruned.model, pruned.params, None, format=fmt)
            sizes[fmt] = disk_bytes(Path(summary["path"]) / "model.safetensors")
            kinds[fmt] = summary.get("layout", fmt)
        ours = {
            k: np.asarray(v, np.float32)
            for k, v in hf_tensors(pruned.params, pruned.model.config).items()
        }
        directory = str(Path(tmp) / "compressed-tensors")
        compressor = ModelCompressor.from_pretrained(directory)
        mismatched = [
            name
            for name, tensor in compressor.sparsity_compressor.decompress(directory)
            if not np.array_equal(tensor.float().numpy(), ours[name])
        ]
    row = {
        "method": method,
        "target": target,
        "overall_sparsity": result.report["overall_sparsity"],
        "layout": kinds["compressed-tensors"],
        "dense_bytes": sizes["hf"],
        "compressed_bytes": sizes["compressed-tensors"],
        "ratio": sizes["compressed-tensors"] / sizes["hf"],
        "decompressed_equal_ours": not mismatched,
        "mismatched": mismatched,
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--structured", nargs="*", default=STRUCTURED)
    parser.add_argument("--sparse", nargs="*", default=SPARSE)
    parser.add_argument("--reps", type=int, default=3, help="speed repetitions (minimum kept)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    dense = jp.load_pretrained(args.model)
    evalw = np.asarray(
        jp.load_windows(
            "shakespeare-hamlet", dense.tokenizer, nsamples=32, seqlen=512, split="eval"
        )
    )
    results: dict[str, Any] = {"model": args.model, "eval": "shakespeare-hamlet 32 x 512"}
    with tempfile.TemporaryDirectory() as tmp:  # the dense export stays while its model is used
        from transformers import AutoModelForCausalLM

        summary = export_model(Path(tmp) / "dense", dense.model, dense.params, dense.tokenizer)
        model = AutoModelForCausalLM.from_pretrained(summary["path"]).eval()
        results["dense"] = {
            "file_bytes": disk_bytes(Path(summary["path"])),
            "params": param_counts(dense.params),
            "ppl_jaxprune": jp.perplexity(dense.model, dense.params, evalw, progress=False).ppl,
            "ppl_export": torch_perplexity(model, evalw),
        }
        print(json.dumps(results["dense"]), flush=True)
        results["structured"], results["sparse"] = [], []
        for spec in args.structured:
            for uniform in (False, True):
                row = structured_row(dense, model, spec, uniform, evalw, args)
                results["structured"].append(row)
                write_json(args.out, results)
    for spec in args.sparse:
        results["sparse"].append(sparse_row(dense, spec))
        write_json(args.out, results)
    write_json(args.out, results)


if __name__ == "__main__":
    main()
