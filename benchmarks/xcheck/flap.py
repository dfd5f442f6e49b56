"""FLAP (WIFV + AL-AM + bias compensation): jaxprune vs the original code on the same windows.

Original (imported from a checkout, never copied): CASIA-IVA-Lab/FLAP,
https://github.com/CASIA-IVA-Lab/FLAP, commit 3bb57db3449dd2fa04a5c2192de80e87e33be2b1
(``--repo-dir``): ``lib/prune.py``'s ``prune_flap`` unmodified, with its README's options
(``--metrics WIFV --structure AL-AM``, bias compensation, real removal: not ``--unstr``).

What the driver changes around it, not in it: ``lib.prune.get_loaders`` (WikiText-2) returns our
calibration windows; the torch model is transformers' LLaMA on the ``jaxprune export`` in float16
(as FLAP's ``main.py`` loads it; its ``compress`` mixes float16 statistics with the weights;
perplexity is then computed in float32) with zero biases added to ``o_proj`` and ``down_proj``
(FLAP's own ``models/hf_llama`` declares them, the compensation is written into them); every
decoder layer gets the rotary embeddings its loop does
not pass (``_protocol.with_layer_context``); CUDA-only calls pass on the CPU.

**Limits of the original**: ``prune_flap`` and ``compress`` hard-code LLaMA-7B's head size (128:
``reshape(-1, 128)``, ``repeat_interleave(128)``, the 512/3 head-vs-channel weight) and slice
``q_proj``, ``k_proj`` and ``v_proj`` with one head mask (multi-head attention only). A model with
another head size or grouped-query attention (SmolLM2-135M: 9 query / 3 key-value heads of 64)
cannot run through it; the driver refuses such a model before any work. ``--tiny-mha`` builds a
random two-block multi-head LLaMA with 128-wide heads (SmolLM2's tokenizer and vocabulary), on
which both implementations run: the kept heads / channels are then compared as overlap
(|kept by both| / |kept by the original|) and the perplexities on the same windows.

    python -m benchmarks.xcheck.flap --repo-dir /tmp/FLAP --tiny-mha /tmp/tiny_mha \\
        --out benchmarks/results/xcheck_flap_tiny_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import types
from pathlib import Path
from typing import Any

from benchmarks._common import import_original, write_json
from benchmarks.xcheck import _protocol as protocol

FLAP = ("https://github.com/CASIA-IVA-Lab/FLAP", "3bb57db3449dd2fa04a5c2192de80e87e33be2b1")
HEAD = 128  # the original's hard-coded head size


def make_tiny_mha(directory: Path, tokenizer_from: str) -> str:
    """A random 2-block multi-head LLaMA with 128-wide heads, SmolLM2's tokenizer and vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((Path(tokenizer_from) / "config.json").read_text())
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=config["vocab_size"],
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=HEAD,
            tie_word_embeddings=True,
            bos_token_id=config["bos_token_id"],
            eos_token_id=config["eos_token_id"],
        )
    )
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "jaxprune_tokenizer.json"):
        if (Path(tokenizer_from) / name).exists():
            shutil.copy(Path(tokenizer_from) / name, directory / name)
    return str(directory)


def check_supported(config: Any) -> None:
    """Refuse a model the original cannot run (head size 128, multi-head attention only)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if head_dim != HEAD or config.num_key_value_heads != config.num_attention_heads:
        raise SystemExit(
            f"the original prune_flap needs 128-wide heads and multi-head attention; this model "
            f"has head_dim {head_dim} and {config.num_attention_heads} query / "
            f"{config.num_key_value_heads} key-value heads (try --tiny-mha DIR)"
        )


def with_output_biases(model: Any) -> None:
    """Zero biases on ``o_proj`` and ``down_proj`` (FLAP writes its compensation there)."""
    import torch

    for layer in model.model.layers:
        for parent, name in ((layer.self_attn, "o_proj"), (layer.mlp, "down_proj")):
            old = getattr(parent, name)
            new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
            new.weight.data = old.weight.data.clone()
            new.bias.data.zero_()
            setattr(parent, name, new)


def original_flap(args, tm, calib, evalw) -> dict[str, Any]:
    """The original ``prune_flap`` on a fresh torch model; ppl and each block's kept units."""
    import torch

    prune = import_original(args.repo_dir, "lib.prune")
    windows = [(torch.as_tensor(w[None].astype("int64")), None) for w in calib]
    prune.get_loaders = lambda *_a, **_k: (windows, None)
    dense, model = tm.load().half(), tm.load()
    check_supported(model.config)
    with_output_biases(model)
    model.half()  # as FLAP's main.py loads it: compress() mixes float16 statistics with weights
    model.seqlen = calib.shape[1]
    options = types.SimpleNamespace(
        nsamples=len(calib),
        seed=args.seed,
        pruning_ratio=args.sparsity,
        remove_heads=-1,
        metrics="WIFV",
        structure="AL-AM",
        unstr=False,
    )
    seconds = protocol.run_original(
        model, calib, lambda: prune.prune_flap(options, model, None, torch.device("cpu"))
    )
    keeps = [
        {
            "heads": protocol.kept_rows(d.self_attn.q_proj.weight, p.self_attn.q_proj.weight, HEAD),
            "mlp": protocol.kept_rows(d.mlp.gate_proj.weight, p.mlp.gate_proj.weight),
        }
        for d, p in zip(dense.model.layers, model.model.layers, strict=True)
    ]
    params = sum(x.numel() for n, x in model.named_parameters() if "embed" not in n)
    return {
        **protocol.torch_perplexity(model.float(), evalw),
        "seconds": seconds,
        "keeps": keeps,
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of CASIA-IVA-Lab/FLAP")
    parser.add_argument("--sparsity", type=float, default=0.2)
    parser.add_argument("--tiny-mha", type=Path, help="build and use a tiny MHA LLaMA here")
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    import_original(args.repo_dir, "lib.prune")  # refuse a wrong checkout before loading
    if args.tiny_mha is not None:
        if args.hf_dir is None:
            raise SystemExit("--tiny-mha needs --hf-dir: an export whose tokenizer it borrows")
        args.model = args.hf_dir = make_tiny_mha(args.tiny_mha, args.hf_dir)

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, "sdpa")
    check_supported(tm.load().config)
    recipe = jp.StructuredRecipe(method="flap", sparsity=args.sparsity)
    ours = protocol.jaxprune_structured(
        pre, calib, evalw, recipe, lambda k: {"heads": list(k.heads), "mlp": list(k.mlp)}
    )
    theirs = original_flap(args, tm, calib, evalw)
    doc = {
        "what": f"{args.model}: jaxprune's FLAP vs the original prune_flap (WIFV, AL-AM)",
        **protocol.provenance(FLAP, args),
        "dense_ppl": jp.perplexity(pre.model, pre.params, evalw).ppl,
        "jaxprune": ours,
        "original_result": theirs,
        "overlap_heads": protocol.overlap(ours["keeps"], theirs["keeps"], "heads"),
        "overlap_mlp_channels": protocol.overlap(ours["keeps"], theirs["keeps"], "mlp"),
    }
    write_json(args.out, doc)
    print({k: doc[k] for k in ("overlap_heads", "overlap_mlp_channels")}, flush=True)


if __name__ == "__main__":
    main()
