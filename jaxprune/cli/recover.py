"""``jaxprune recover``: fine-tune a pruned model (LoRA or masked) so it regains quality."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jaxprune.cli._args import (
    UsageError,
    add_bos_flag,
    check_data,
    check_model,
    check_output,
    check_positive,
    emit,
    mesh_from_arg,
)


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    del model_help  # --model is required here, so it gets its own help (no default to name)
    rc = sub.add_parser(
        "recover",
        help="fine-tune a pruned model (LoRA merged keeping its masks, or masked full "
        "fine-tuning); writes a normal checkpoint and prints a summary (--json: the report)",
        description="Fine-tune a pruned model to regain quality. On a CPU this is slow: a step "
        "of 8 x 256-token windows of SmolLM2-135M took 42-58 s on 2 shared cores, so the default "
        "200 steps take hours; an estimate is printed after the first two steps.",
    )
    rc.add_argument(
        "--model",
        required=True,
        help="the model to fine-tune (required): a directory written by `jaxprune prune` (its "
        "masks are kept), a Hugging Face checkpoint directory, a .gguf file or an embedded name",
    )
    rc.add_argument(
        "--data",
        default="shakespeare-calib",
        help=f"training corpus ({sources}) or text path (default shakespeare-calib)",
    )
    rc.add_argument(
        "--eval",
        default="shakespeare-hamlet",
        help="held-out corpus for perplexity, '' to skip (default shakespeare-hamlet)",
    )
    rc.add_argument("--method", choices=["lora", "masked"], default="lora", help="(default lora)")
    rc.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    rc.add_argument("--batch-size", type=int, default=8, help="windows per micro-batch (default 8)")
    rc.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default 1)")
    rc.add_argument("--seqlen", type=int, default=256, help="tokens per window (default 256)")
    rc.add_argument("--lr", type=float, help="peak learning rate (default 2e-4 LoRA, 2e-5 masked)")
    rc.add_argument("--warmup", type=int, help="warmup steps (default steps/10), then cosine")
    rc.add_argument(
        "--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)"
    )
    rc.add_argument(
        "--clip", type=float, default=1.0, help="global gradient-norm clip, 0: none (default 1)"
    )
    rc.add_argument("--bf16", action="store_true", help="bfloat16 compute, float32 master weights")
    rc.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    rc.add_argument(
        "--alpha", type=float, default=16.0, help="LoRA alpha, scale alpha/rank (default 16)"
    )
    rc.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    rc.add_argument(
        "--lora-targets",
        nargs="+",
        help="regexes of kernels with adapters (default: the family's pruned linears)",
    )
    rc.add_argument(
        "--save-adapters",
        metavar="DIR",
        help="lora: also write the adapters in PEFT's format (adapter_config.json, "
        "adapter_model.safetensors) to DIR; peft's PeftModel.from_pretrained loads them onto "
        "`jaxprune export` of --model",
    )
    rc.add_argument("--eval-nsamples", type=int, default=16, help="held-out windows (default 16)")
    rc.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="held-out perplexity every N steps (default 0: before and after only)",
    )
    rc.add_argument(
        "--save-every", type=int, default=0, help="training state every N steps (default 0: never)"
    )
    rc.add_argument("--checkpoint-dir", help="training-state directory (resumed when present)")
    rc.add_argument("--mesh", help="DATAxMODEL device mesh for data parallelism, e.g. 8x1")
    rc.add_argument("--seed", type=int, default=0, help="LoRA init and dropout seed (default 0)")
    rc.add_argument("--out", required=True, help="directory for the recovered checkpoint")
    rc.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    rc.add_argument("--json", action="store_true", help="print the full report as one JSON line")
    rc.add_argument(
        "--train-zeros",
        action="store_true",
        help="a model without saved masks: train its exact zeros too (by default kernels with "
        ">= 10%% exact zeros, a sparse export or GGUF, keep them as masks)",
    )
    add_bos_flag(rc)
    rc.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from jaxprune.training.lora import LoraConfig
    from jaxprune.training.recover import RecoverConfig

    try:
        lora = LoraConfig(
            rank=args.rank,
            alpha=args.alpha,
            dropout=args.dropout,
            targets=tuple(args.lora_targets) if args.lora_targets else None,
        )
        return RecoverConfig(
            method=args.method,
            steps=args.steps,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            learning_rate=args.lr,
            warmup_steps=args.warmup,
            weight_decay=args.weight_decay,
            clip_norm=args.clip,
            compute_dtype="bfloat16" if args.bf16 else "float32",
            eval_every=args.eval_every,
            save_every=args.save_every,
            seed=args.seed,
            lora=lora,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def _check_adapters_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise UsageError(
            f"--save-adapters {path}: already exists; choose another path or pass --overwrite"
        )
    if path.exists() and not (path / "adapter_config.json").exists():
        raise UsageError(
            f"--save-adapters {path}: --overwrite replaces PEFT adapter directories only "
            "(no adapter_config.json here); remove it yourself or choose another path"
        )


def run(args: argparse.Namespace) -> None:
    from jaxprune.pipeline import recover_pretrained

    check_model(args.model)
    check_data("--data", args.data)
    if args.eval:
        check_data("--eval", args.eval)
    check_positive(seqlen=args.seqlen, eval_nsamples=args.eval_nsamples)
    config = config_from_args(args)
    check_output(args.out, args.overwrite)
    if args.save_adapters:
        if args.method != "lora":
            raise UsageError(
                "--save-adapters needs --method lora (masked recovery has no adapters)"
            )
        _check_adapters_dir(Path(args.save_adapters), args.overwrite)
    if args.save_every and not args.checkpoint_dir:
        raise UsageError("--save-every needs --checkpoint-dir (where the training state goes)")
    mesh = mesh_from_arg(args.mesh)
    result = recover_pretrained(
        args.model,
        args.data,
        config,
        seqlen=args.seqlen,
        eval_source=args.eval or None,
        eval_nsamples=args.eval_nsamples,
        checkpoint_dir=args.checkpoint_dir,
        mesh=mesh,
        bos=args.bos,
        keep_zeros=not args.train_zeros,
    )
    saved = result.save(args.out, overwrite=args.overwrite)
    adapters = None
    if args.save_adapters:
        adapters = result.save_adapters(args.save_adapters, overwrite=args.overwrite)["path"]
    recovery = dict(result.report["recovery"])
    recovery.pop("loss")
    result = {"model": args.model, "out": saved["path"], **recovery}
    if adapters is not None:
        result["adapters"] = adapters
    emit(args, result, summary(result))


def summary(result: dict[str, Any]) -> str:
    """What ran, the held-out perplexity along the way, where the model went."""
    lines = [
        f"{result['model']}: {result['method']} recovery, {result['steps']} steps, "
        f"{result['tokens']:,} tokens in {result['seconds']:.1f} s"
    ]
    if result.get("eval"):
        first, last = result["eval"][0], result["eval"][-1]
        lines.append(
            f"held-out perplexity on {result['eval_data']}: step {first[0]} {first[1]:.2f} -> "
            f"step {last[0]} {last[1]:.2f}"
        )
    lines.append(f"saved to {result['out']}")
    if "adapters" in result:
        lines.append(f"PEFT adapters saved to {result['adapters']}")
    return "\n".join(lines)
