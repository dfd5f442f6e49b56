"""What the cross-check drivers share: the public protocol's windows on both sides, the torch model.

The jaxprune side loads the model by name and takes its windows from ``jaxprune.load_windows``
(``shakespeare-calib`` N × L seed 0 for calibration, ``shakespeare-hamlet`` 32 × L for
perplexity); the torch side gets the same weights through ``jaxprune export`` (a Hugging Face
directory transformers loads) and the very same token arrays, so any difference is the methods'.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def add_protocol_args(parser: argparse.ArgumentParser, *, nsamples: int = 64) -> None:
    """``--model --hf-dir --nsamples --seqlen --eval-nsamples --seed --bos --out``."""
    parser.add_argument("--model", default="smollm2-135m", help="jaxprune model name or path")
    parser.add_argument("--hf-dir", help="an existing `jaxprune export` of --model (else made)")
    parser.add_argument("--nsamples", type=int, default=nsamples, help="calibration windows")
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--eval-nsamples", type=int, default=32, help="Hamlet windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bos", action="store_true", help="every window starts with BOS (Gemma)")
    parser.add_argument("--out", type=Path, required=True)


def windows(pre: Any, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, evaluation) token windows of the protocol, as ``oneshot.py`` builds them."""
    from benchmarks._common import protocol_windows, with_bos

    calib, evalw = protocol_windows(
        pre.tokenizer, args.nsamples, args.seqlen, args.eval_nsamples, args.seed
    )
    if args.bos:  # BOS then the first seqlen - 1 tokens, as oneshot.py --bos
        bos = pre.tokenizer.bos_token_id
        calib, evalw = with_bos(calib, bos), with_bos(evalw, bos)
    return np.asarray(calib), np.asarray(evalw)


@contextlib.contextmanager
def hf_export(pre: Any, hf_dir: str | None) -> Iterator[str]:
    """``hf_dir``, or else a ``jaxprune export`` of ``pre`` in a directory kept for the block."""
    if hf_dir is not None:
        yield hf_dir
        return
    from jaxprune.models.export import export_hf

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = str(Path(tmp) / "hf")
        export_hf(hf_dir, pre.model, pre.params, pre.tokenizer)
        yield hf_dir


class TorchModel:
    """transformers' causal LM on the exported weights (float32, CPU), kept in a temp dir."""

    def __init__(self, pre: Any, hf_dir: str | None, attn: str = "sdpa"):
        import torch

        self._tmp = None
        if hf_dir is None:
            from jaxprune.models.export import export_hf

            self._tmp = tempfile.TemporaryDirectory()
            hf_dir = str(Path(self._tmp.name) / "hf")
            export_hf(hf_dir, pre.model, pre.params, pre.tokenizer)
        self.hf_dir = hf_dir
        self.torch = torch
        self.attn = attn

    def load(self) -> Any:
        """A fresh copy of the dense model (each pruning run starts from it)."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            self.hf_dir, torch_dtype=self.torch.float32, attn_implementation=self.attn
        )
        model.eval()
        model.config.use_cache = False
        return model


def loader_batches(calib: np.ndarray) -> list[tuple[Any, None]]:
    """The calibration windows as the originals' ``get_loaders`` yields them: one ``(1, L)`` int64
    tensor per window, with no target."""
    import torch

    return [(torch.as_tensor(w[None].astype("int64")), None) for w in calib]


def cpu_shims() -> None:
    """Let the originals' CUDA-only calls pass on a CPU-only torch.

    ``torch.cuda.synchronize()`` (SparseGPT's timing) becomes a no-op and ``Tensor.cuda()`` (RIA's
    per-layer sort) returns the tensor itself; nothing changes where CUDA exists.
    """
    import torch

    if not torch.cuda.is_available():
        torch.cuda.synchronize = lambda *_a, **_k: None
        torch.Tensor.cuda = lambda self, *_a, **_k: self


def with_literals_rewritten(
    original: Any, rewrites: dict[str, tuple[int, str]], name: str, package: str | None = None
) -> Any:
    """An original module's text from its checkout with each ``literal`` (occurring exactly
    ``count`` times, else refused) replaced by ``new`` (``rewrites[literal] = (count, new)``),
    executed as module ``name`` (of ``package``); nothing is written to the checkout."""
    path = Path(original.__file__)
    text = path.read_text()
    for literal, (count, new) in rewrites.items():
        if text.count(literal) != count:
            raise SystemExit(f"{path}: {literal!r} occurs {text.count(literal)}×, not {count}×")
        text = text.replace(literal, new)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    if package is not None:
        module.__package__ = package
    exec(compile(text, str(path), "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def tensor_to_rewritten(rewrite: Callable[[Any], Any]) -> Iterator[None]:
    """For the block, every argument of ``Tensor.to`` (positional, ``device=``, ``dtype=``) passes
    through ``rewrite`` first; ``Tensor.to`` is restored afterwards."""
    import torch

    to = torch.Tensor.to

    def rewritten(self, *args, **kwargs):
        args = tuple(rewrite(a) for a in args)
        kwargs = {k: rewrite(v) if k in ("device", "dtype") else v for k, v in kwargs.items()}
        return to(self, *args, **kwargs)

    torch.Tensor.to = rewritten
    try:
        yield
    finally:
        torch.Tensor.to = to


@contextlib.contextmanager
def float16_casts_kept_float32() -> Iterator[None]:
    """For the block, an original's float16 casts of a float32 model's tensors keep float32:
    ``Tensor.half()``, ``Tensor.to(float16)`` and ``Tensor.type(torch.half)`` (restored after)."""
    import torch

    half, as_type = torch.Tensor.half, torch.Tensor.type

    def keep32(a: Any) -> Any:
        return torch.float32 if a is torch.float16 else a

    def typed(self, dtype=None, *args, **kwargs):
        return as_type(self) if dtype is None else as_type(self, keep32(dtype), *args, **kwargs)

    torch.Tensor.half = lambda self, *_a, **_k: self.to(torch.float32, copy=True)
    torch.Tensor.type = typed
    try:
        with tensor_to_rewritten(keep32):
            yield
    finally:
        torch.Tensor.half, torch.Tensor.type = half, as_type


def torch_perplexity(model: Any, evalw: np.ndarray) -> dict[str, float]:
    """exp(mean next-token NLL) over all predicted tokens (as ``jaxprune.perplexity``)."""
    import torch

    nll, tokens = 0.0, 0
    with torch.no_grad():
        for row in evalw:
            ids = torch.as_tensor(row[None].astype(np.int64))
            logits = model(ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            tokens += ids.shape[1] - 1
    return {"ppl": math.exp(nll / tokens), "tokens": tokens}


def jaxprune_unstructured(pre: Any, calib, evalw, recipe: Any) -> dict[str, Any]:
    """Prune with jaxprune on ``calib`` and score on ``evalw``: ppl, sparsity, seconds, params."""
    import jaxprune as jp

    start = time.perf_counter()
    result = jp.prune(pre.model, pre.params, calib, recipe, progress=False)
    seconds = time.perf_counter() - start
    ppl = jp.perplexity(pre.model, result.params, evalw).ppl
    return {
        "ppl": ppl,
        "sparsity": result.report["overall_sparsity"],
        "seconds": seconds,
        "params": result.params,
    }


def jaxprune_structured(
    pre: Any, calib, evalw, recipe: Any, describe: Callable[[Any], dict]
) -> dict[str, Any]:
    """Prune structurally with jaxprune on ``calib`` and score on ``evalw``: ppl, parameters
    after, seconds, and every block's kept units (``describe(BlockKeep)``; unpruned blocks whole).
    """
    import jaxprune as jp
    from jaxprune.structured.groups import BlockKeep

    start = time.perf_counter()
    result = jp.prune_structured(pre.model, pre.params, calib, recipe)
    seconds = time.perf_counter() - start
    widths = pre.model.config.layer_widths
    keeps = {**{i: BlockKeep.full(widths(i)) for i in range(pre.model.num_blocks)}, **result.keeps}
    return {
        "ppl": jp.perplexity(result.model, result.params, evalw).ppl,
        "params_after": result.report["params_after"],
        "seconds": seconds,
        "keeps": [describe(k) for _, k in sorted(keeps.items())],
    }


def run_original(model: Any, calib: np.ndarray, prune: Callable[[], Any]) -> float:
    """Seconds of ``prune()``, an original pruning loop over ``model``'s layers, run with every
    layer given its context (:func:`with_layer_context`) and CUDA-only calls passed on the CPU."""
    with_layer_context(model, calib[0])
    cpu_shims()
    start = time.perf_counter()
    prune()
    seconds = time.perf_counter() - start
    without_layer_context(model)
    return seconds


def original_unstructured(
    model: Any, calib: np.ndarray, evalw: np.ndarray, prune: Callable[[], Any]
) -> dict[str, Any]:
    """:func:`run_original`, then the pruned model's ppl, sparsity and the seconds."""
    seconds = run_original(model, calib, prune)
    return {**torch_perplexity(model, evalw), "sparsity": torch_sparsity(model), "seconds": seconds}


def comparison_row(config: str, ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """One result row: ppl, relative difference, sparsity and seconds of both sides."""
    return {
        "config": config,
        "jaxprune_ppl": ours["ppl"],
        "original_ppl": theirs["ppl"],
        "relative_difference": ours["ppl"] / theirs["ppl"] - 1,
        "jaxprune_sparsity": ours["sparsity"],
        "original_sparsity": theirs["sparsity"],
        "jaxprune_seconds": ours["seconds"],
        "original_seconds": theirs["seconds"],
    }


def args_text(args: argparse.Namespace) -> dict[str, str]:
    """The driver's arguments as text, for its result file."""
    return {k: str(v) for k, v in vars(args).items()}


def provenance(original: tuple[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """``{"original": url, commit and the checkout's git state, "args": the driver's args}``."""
    from benchmarks._common import git_commit

    url, commit = original
    return {
        "original": {"url": url, "commit": commit, "checkout": git_commit(args.repo_dir)},
        "args": args_text(args),
    }


def write_measurement(path: str, what: str, args: argparse.Namespace, **sections: Any) -> None:
    """Write ``{"what", "args": the driver's args as text, **sections}`` (atomically, with the
    environment) to ``path``: the result file of a measurement-only driver."""
    from benchmarks._common import write_json

    write_json(path, {"what": what, "args": args_text(args), **sections})


def capture_layer_kwargs(model: Any, window: np.ndarray) -> list[dict[str, Any]]:
    """The keyword arguments the model's own forward hands each decoder layer on ``window``.

    Original pruning loops (written for transformers 4.3x) call a layer with only
    ``attention_mask`` and ``position_ids``; current layers also need their rotary embeddings
    (and Gemma its per-layer sliding or global mask). The windows all have one length and no
    padding, so what one forward passes is what every window needs.
    """
    import torch

    captured: list[dict[str, Any]] = [{} for _ in model.model.layers]

    def hook(index):
        def record(_module, _args, kwargs):
            captured[index] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

        return record

    handles = [
        layer.register_forward_pre_hook(hook(i), with_kwargs=True)
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        model(torch.as_tensor(window[None].astype(np.int64)))
    for h in handles:
        h.remove()
    return captured


def with_layer_context(model: Any, window: np.ndarray) -> None:
    """Make every decoder layer always receive its captured keyword arguments.

    The layer's ``forward`` is overridden on the instance (the module, its name and its
    children stay as they are, so the originals' ``find_layers`` names do not change) and
    returns a tuple, as the transformers 4.3x layers the originals index with ``[0]`` did.
    """
    contexts = capture_layer_kwargs(model, window)
    for layer, context in zip(model.model.layers, contexts, strict=True):
        forward = type(layer).forward

        def call(hidden_states, *_args, _layer=layer, _context=context, _forward=forward, **kw):
            out = _forward(_layer, hidden_states, **{**kw, **_context})
            return out if isinstance(out, tuple) else (out,)

        layer.forward = call


def without_layer_context(model: Any) -> None:
    """Undo :func:`with_layer_context` (the model's own forward then runs as usual)."""
    for layer in model.model.layers:
        layer.__dict__.pop("forward", None)


def torch_sparsity(model: Any) -> float:
    """Fraction of zeros over the decoder layers' linear weights."""
    import torch

    zeros = total = 0
    for module in model.model.layers.modules():
        if isinstance(module, torch.nn.Linear):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total


def kept_rows(dense: Any, pruned: Any, unit: int = 1) -> list[int]:
    """Indices of the ``unit``-row groups of ``dense`` kept (in order) in ``pruned``."""
    dense, pruned = (np.asarray(w.detach().float()) for w in (dense, pruned))
    groups = dense.reshape(-1, unit, dense.shape[-1])
    kept, g = [], 0
    for row in pruned.reshape(-1, unit, pruned.shape[-1]):
        while not np.array_equal(groups[g], row):
            g += 1
        kept.append(g)
        g += 1
    return kept


def overlap(ours: list[dict], theirs: list[dict], key: str) -> float:
    """|kept by both| / |kept by the original| over all blocks (1.0: the same units)."""
    both = sum(len(set(o[key]) & set(t[key])) for o, t in zip(ours, theirs, strict=True))
    return both / max(1, sum(len(t[key]) for t in theirs))


def torch_linears(model: Any) -> dict[str, np.ndarray]:
    """The decoder layers' linear weights of a transformers model, ``(out, in)``, by HF name."""
    import torch

    return {
        f"{name}.weight": module.weight.detach().float().numpy()
        for name, module in model.named_modules()
        if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear)
    }


def jaxprune_linears(pre: Any, params: Any) -> dict[str, np.ndarray]:
    """jaxprune's ``params`` under the same HF names and layout (``jaxprune export``'s mapping)."""
    from jaxprune.models.export import hf_tensors

    return {k: np.asarray(v) for k, v in hf_tensors(params, pre.model.config).items()}


def kept_overlap(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per linear of ``theirs``: |non-zero in both| / |non-zero in theirs| (1.0: the original's
    kept weights are all kept by ours too). Mean and min over the linears, and the mean by
    projection name (``q_proj``, …, ``down_proj``), and every linear's share."""
    shares: dict[str, float] = {}
    for name, weight in theirs.items():
        kept = weight != 0
        shares[name] = float((kept & (ours[name] != 0)).sum() / max(1, kept.sum()))
    by_kind: dict[str, list[float]] = {}
    for name, share in shares.items():
        by_kind.setdefault(name.split(".")[-2], []).append(share)
    values = list(shares.values())
    return {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "linears": len(values),
        "by_projection": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
        "per_linear": shares,
    }
