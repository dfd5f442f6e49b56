"""FLAP (WIFV + AL-AM + bias compensation): jaxprune vs the original code on the same windows.

Original (imported from a checkout, never copied): CASIA-IVA-Lab/FLAP,
https://github.com/CASIA-IVA-Lab/FLAP, commit 3bb57db3449dd2fa04a5c2192de80e87e33be2b1
(``--repo-dir``): ``lib/prune.py``'s ``prune_flap`` unmodified, with its README's options
(``--metrics WIFV --structure AL-AM``, bias compensation, real removal: not ``--unstr``).

What the driver changes around it, not in it: ``lib.prune.get_loaders`` (WikiText-2) returns our
calibration windows; the torch model is transformers' LLaMA on the ``jaxprune export`` in float16
(as FLAP's ``main.py`` loads it; its ``compress`` mixes float16 statistics with the weights;
perplexity is then computed in float32), or with ``--float32`` in float32 with the original's
float16 casts kept float32 (``_protocol.float16_casts_kept_float32``; jaxprune's precision; on
the shared 2-core CPU a float16 MLP-sized product took 4.7× the float32 one, and the original's
float16 pass 219 s per block of 64 × 512 tokens, its float32 pass 13 s), with zero biases added
to ``o_proj`` and ``down_proj`` (FLAP's own ``models/hf_llama`` declares them, the compensation is
written into them); every decoder layer gets the rotary embeddings its loop does not pass
(``_protocol.with_layer_context``); CUDA-only calls pass on the CPU.

**Limits of the original**: ``prune_flap`` and ``compress`` hard-code LLaMA-7B's head size (128:
``reshape(-1, 128)``, ``repeat_interleave(128)``, the 512/3 head-vs-channel weight, which is
4 · 128 / 3, a head's parameters over a channel's) and slice ``q_proj``, ``k_proj`` and ``v_proj``
with one head mask (multi-head attention only). SmolLM2-135M (9 query / 3 key-value heads of 64)
cannot run through it unmodified; the driver refuses such a model before any work. Two ways round:

- ``--tiny-mha DIR`` builds a random two-block multi-head LLaMA with 128-wide heads (SmolLM2's
  tokenizer and vocabulary), on which the original runs **unmodified**.
- ``--mha DIR`` writes SmolLM2 (any LLaMA export) as the same function with multi-head attention:
  each key/value head repeated for the query heads that share it (dense perplexity unchanged,
  recorded), and runs the original's ``lib/prune.py`` with its **head-size literals set to the
  model's** (:func:`import_prune_flap`: the five expressions above, each replacement counted; the
  text is read from the checkout at run time, nothing is copied here). Both sides prune this
  multi-head model, so heads compare unit for unit on real weights.

The kept heads / channels are compared as overlap (|kept by both| / |kept by the original|), and
the perplexities on the same windows.

    python -m benchmarks.xcheck.flap --repo-dir /tmp/FLAP --mha /tmp/smollm2_mha --float32 \
        --out benchmarks/results/xcheck_flap_cpu.json
    python -m benchmarks.xcheck.flap --repo-dir /tmp/FLAP --tiny-mha /tmp/tiny_mha \
        --hf-dir SMOLLM2_EXPORT --out benchmarks/results/xcheck_tiny/flap.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import types
from pathlib import Path
from typing import Any

from benchmarks._common import import_original, write_json
from benchmarks.xcheck import _protocol as protocol

FLAP = ("https://github.com/CASIA-IVA-Lab/FLAP", "3bb57db3449dd2fa04a5c2192de80e87e33be2b1")
HEAD = 128  # the original's hard-coded head size


def copy_tokenizer(source: str, directory: Path) -> None:
    """Copy the tokenizer files present in the HF directory ``source`` into ``directory``."""
    for name in ("tokenizer.json", "tokenizer_config.json", "jaxprune_tokenizer.json"):
        if (Path(source) / name).exists():
            shutil.copy(Path(source) / name, directory / name)


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
    copy_tokenizer(tokenizer_from, directory)
    return str(directory)


def make_mha(directory: Path, hf_dir: str) -> str:
    """``hf_dir``'s LLaMA as the same function with multi-head attention: each key/value head's
    rows of ``k_proj`` / ``v_proj`` repeated for every query head of its group; tokenizer copied."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    source = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    config = source.config
    heads, groups = config.num_attention_heads, config.num_key_value_heads
    head_dim = head_size(config)
    mha_config = type(config).from_dict({**config.to_dict(), "num_key_value_heads": heads})
    model = LlamaForCausalLM(mha_config).to(torch.float32)
    state = source.state_dict()
    for name, weight in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            rows = weight.reshape(groups, head_dim, -1)
            state[name] = rows.repeat_interleave(heads // groups, dim=0).reshape(
                -1, weight.shape[1]
            )
    model.load_state_dict(state)
    model.save_pretrained(directory)
    copy_tokenizer(hf_dir, directory)
    return str(directory)


def head_size(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


# The original's LLaMA-7B head-size literals in ``lib/prune.py`` and how many times each occurs.
HEAD_LITERALS = {
    "reshape(-1, 128)": 4,
    "repeat_interleave(128)": 2,
    "retain_heads * 128": 1,
    "reshape(len(layers), -1, 128)": 1,
    "512.0 / 3": 1,
}


def import_prune_flap(repo_dir: str, head: int) -> Any:
    """The original ``lib.prune``: unmodified for 128-wide heads, else its text from the checkout
    with :data:`HEAD_LITERALS` set to ``head`` (4 · head / 3 for the weight), executed as a module
    of the checkout's ``lib`` package. Refuses a checkout whose text does not match the counts."""
    prune = import_original(repo_dir, "lib.prune")
    if head == HEAD:
        return prune
    rewrites = {
        literal: (
            count,
            f"{4 * head}.0 / 3" if literal == "512.0 / 3" else literal.replace("128", str(head)),
        )
        for literal, count in HEAD_LITERALS.items()
    }
    return protocol.with_literals_rewritten(prune, rewrites, f"lib.prune_head{head}", "lib")


def check_supported(config: Any, *, rewritten: bool = False) -> None:
    """Refuse a model the original cannot run (head size 128 unless ``rewritten``; multi-head)."""
    head_dim = head_size(config)
    if (
        head_dim != HEAD and not rewritten
    ) or config.num_key_value_heads != config.num_attention_heads:
        raise SystemExit(
            f"the original prune_flap needs 128-wide heads and multi-head attention; this model "
            f"has head_dim {head_dim} and {config.num_attention_heads} query / "
            f"{config.num_key_value_heads} key-value heads (try --mha DIR or --tiny-mha DIR)"
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

    dtype = torch.float32 if args.float32 else torch.float16
    dense, model = tm.load().to(dtype), tm.load()
    head = head_size(model.config)
    check_supported(model.config, rewritten=args.mha is not None)
    prune = import_prune_flap(args.repo_dir, head)
    windows = protocol.loader_batches(calib)
    prune.get_loaders = lambda *_a, **_k: (windows, None)
    with_output_biases(model)
    model.to(dtype)  # FLAP's main.py loads float16: compress() mixes float16 statistics in
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

    def run() -> None:
        with protocol.float16_casts_kept_float32() if args.float32 else contextlib.nullcontext():
            prune.prune_flap(options, model, None, torch.device("cpu"))

    seconds = protocol.run_original(model, calib, run)
    keeps = [
        {
            "heads": protocol.kept_rows(d.self_attn.q_proj.weight, p.self_attn.q_proj.weight, head),
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
    built = parser.add_mutually_exclusive_group()
    built.add_argument("--tiny-mha", type=Path, help="build and use a tiny MHA LLaMA here")
    built.add_argument("--mha", type=Path, help="write --model with multi-head attention here")
    parser.add_argument(
        "--float32", action="store_true", help="run the original in float32 (its casts kept)"
    )
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    import_original(args.repo_dir, "lib.prune")  # refuse a wrong checkout before loading
    if args.tiny_mha is not None and args.hf_dir is None:
        raise SystemExit("--tiny-mha needs --hf-dir: an export whose tokenizer it borrows")

    import jaxprune as jp

    source_dense_ppl = None
    if args.tiny_mha is not None:
        args.model = args.hf_dir = make_tiny_mha(args.tiny_mha, args.hf_dir)
    elif args.mha is not None:
        source = jp.load_pretrained(args.model)
        with protocol.hf_export(source, args.hf_dir) as hf_dir:
            args.model = args.hf_dir = make_mha(args.mha, hf_dir)
        source_dense_ppl = jp.perplexity(
            source.model, source.params, protocol.windows(source, args)[1]
        ).ppl
        del source

    pre = jp.load_pretrained(args.model)
    calib, evalw = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, "sdpa")
    config = tm.load().config
    check_supported(config, rewritten=args.mha is not None)
    recipe = jp.StructuredRecipe(method="flap", sparsity=args.sparsity)
    ours = protocol.jaxprune_structured(
        pre, calib, evalw, recipe, lambda k: {"heads": list(k.heads), "mlp": list(k.mlp)}
    )
    theirs = original_flap(args, tm, calib, evalw)
    doc = {
        "what": f"{args.model}: jaxprune's FLAP vs the original prune_flap (WIFV, AL-AM)",
        **protocol.provenance(FLAP, args),
        "dense_ppl": jp.perplexity(pre.model, pre.params, evalw).ppl,
        "source_dense_ppl": source_dense_ppl,  # --mha: the model before the heads were repeated
        "head_literals_rewritten": head_size(config) != HEAD,
        "jaxprune": ours,
        "original_result": theirs,
        "overlap_heads": protocol.overlap(ours["keeps"], theirs["keeps"], "heads"),
        "overlap_mlp_channels": protocol.overlap(ours["keeps"], theirs["keeps"], "mlp"),
    }
    write_json(args.out, doc)
    print({k: doc[k] for k in ("overlap_heads", "overlap_mlp_channels")}, flush=True)


if __name__ == "__main__":
    main()
