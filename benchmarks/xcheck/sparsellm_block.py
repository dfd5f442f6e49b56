"""SparseLLM's MLP solver alone: the original's and jaxprune's on the same block's inputs.

The whole-model comparison (``sparsellm.py``) mixes the MLP solver with everything around it
(pruned prefixes, attention, the opt-epoch rule). This driver isolates the solver: for each chosen
decoder block of the dense model it captures, on the protocol's calibration windows, the block's
input ``h`` and its MLP's input ``X`` (the dense attention's output after the norm, which is what
both sides prune the MLP against: the original with ``true_sequential`` off, jaxprune by default),
then

* runs the original ``llama_sparsellm`` (BaiTheBest/SparseLLM ``27fe26a``, imported from a
  checkout, never copied; its float16 casts kept float32 as in ``sparsellm.py``; ``--s-lr``
  rewrites its ``s`` learning rate as there) on a one-block model whose embedding returns the
  captured ``h`` of each window, so its MLP loop sees exactly that ``X``; as the block is its
  layer 0, the opt-epoch rule gives it its 4 epochs;
* runs jaxprune's ``sparsellm.prune_mlp`` on the same ``X`` and ``Y = MLP(X)`` with the
  original's hyper-parameters (α = β = γ, 4 iterations, 2 ``s`` steps), with ``s`` frozen
  (``s_steps = 0``, what the original does at ``--s-lr 0``), and with jaxprune's defaults; each
  with the refits' ridge at jaxprune's default (``refit_percdamp`` 0.01) and at each value of
  ``--refit-percdamp`` (default 1e-4; the original refits by undamped pseudo-inverse);

and reports each result's output error ``‖Y − MLP_pruned(X)‖² / ‖Y‖²`` on those tokens. jaxprune
records the error of every iterate, so its last iterate (what the original keeps) is set beside
the best one (what jaxprune keeps); iterate 0 is per-layer SparseGPT.

    python -m benchmarks.xcheck.sparsellm_block --repo-dir /tmp/SparseLLM --s-lr 0 \\
        --blocks 2 11 20 27 --out benchmarks/results/sparsellm_block_slr0_cpu.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks._common import write_json
from benchmarks.xcheck import _protocol as protocol
from benchmarks.xcheck.sparsellm import SPARSELLM, import_model_utils, original_options

# jaxprune's option sets beside the original (only the ratios of alpha, beta, gamma matter).
LIKE_ORIGINAL = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "iterations": 4, "s_steps": 2}
BASE: dict[str, dict[str, Any]] = {
    "like_original": LIKE_ORIGINAL,
    "like_original_s_frozen": {**LIKE_ORIGINAL, "s_steps": 0},
    "defaults": {},
}


def variants(ridges: list[float]) -> dict[str, dict[str, Any]]:
    """Each base option set as it is (the refits' ridge at jaxprune's default) and with each
    ``refit_percdamp`` in ``ridges`` (the original refits by undamped pseudo-inverse), named
    ``"<base>@refit_percdamp=<value>"``."""
    named = dict(BASE)
    for ridge in ridges:
        for name, options in BASE.items():
            named[f"{name}@refit_percdamp={ridge:g}"] = {**options, "refit_percdamp": ridge}
    return named


ROLES = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def block_inputs(model: Any, calib: np.ndarray, block: int) -> tuple[Any, Any]:
    """The dense model's ``(h, X)`` at ``block`` on every window: the decoder block's input
    ``(N, L, d)`` and its MLP's input ``(N·L, d)``, float32 torch tensors."""
    import torch

    layer = model.model.layers[block]
    seen: dict[str, list[Any]] = {"h": [], "x": []}

    def record(name: str):
        def hook(_module, args, kwargs):
            value = args[0] if args else kwargs["hidden_states"]
            seen[name].append(value.detach().clone())

        return hook

    handles = [
        layer.register_forward_pre_hook(record("h"), with_kwargs=True),
        layer.mlp.register_forward_pre_hook(record("x"), with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            for row in calib:
                model(torch.as_tensor(row[None].astype(np.int64)))
    finally:
        for h in handles:
            h.remove()
    h = torch.cat(seen["h"], dim=0)
    x = torch.cat(seen["x"], dim=0).reshape(-1, h.shape[-1])
    return h, x


def mlp_output(weights: dict[str, Any], x: Any) -> Any:
    """LLaMA's MLP ``down(silu(gate(x)) ⊙ up(x))`` with torch ``(out, in)`` weights by role."""
    import torch

    with torch.no_grad():
        hidden = torch.nn.functional.silu(x @ weights["gate"].T) * (x @ weights["up"].T)
        return hidden @ weights["down"].T


def output_error(y: Any, y_hat: Any) -> float:
    """``‖y − y_hat‖² / ‖y‖²`` in float64."""
    y, y_hat = y.double(), y_hat.double()
    return float(((y - y_hat) ** 2).sum() / (y**2).sum())


def replay_model(model: Any, h: Any, block: int) -> tuple[Any, list[tuple[Any, None]]]:
    """``model`` cut to its decoder block ``block`` (in place), with an embedding that returns
    the captured block input ``h[j]`` for window ``j``; and the batches (token ids all ``j``) that
    make the original's loop see each window in turn."""
    import torch

    model.model.layers = torch.nn.ModuleList([model.model.layers[block]])
    model.config.num_hidden_layers = 1

    class Replay(torch.nn.Module):
        """An embedding whose window ``j`` (token ids all ``j``) returns the captured ``h[j]``."""

        def forward(self, ids: Any) -> Any:
            return h[int(ids[0, 0])][None]

    model.model.embed_tokens = Replay()
    seqlen = h.shape[1]
    batches = [(torch.full((1, seqlen), j, dtype=torch.int64), None) for j in range(h.shape[0])]
    return model, batches


def original_block(utils: Any, tm: Any, h: Any, block: int, sparsity: float) -> dict[str, Any]:
    """The original ``llama_sparsellm`` on a one-block model fed ``h``; its MLP weights by role."""
    import torch

    model, batches = replay_model(tm.load(), h, block)
    nsamples, seqlen = h.shape[0], h.shape[1]
    model.seqlen = seqlen
    options = original_options(nsamples, sparsity)

    def prune() -> None:
        with protocol.float16_casts_kept_float32():
            utils.llama_sparsellm(model, batches, torch.device("cpu"), options)

    seconds = protocol.run_original(model, np.zeros((1, seqlen), np.int64), prune)
    mlp = model.model.layers[0].mlp
    weights = {role: getattr(mlp, name).weight.detach().clone() for role, name in ROLES.items()}
    return {"weights": weights, "seconds": seconds}


def jaxprune_block(dense: dict[str, Any], x: Any, y: Any, sparsity: float, options) -> dict:
    """jaxprune's ``prune_mlp`` with ``options`` on ``(x, y)``; weights by role and its record."""
    import jax.numpy as jnp
    import torch

    from jaxprune.core.sparsity import Unstructured
    from jaxprune.methods import sparsellm

    kernels = {role: jnp.asarray(w.T.numpy()) for role, w in dense.items()}
    start = time.perf_counter()
    solution = sparsellm.prune_mlp(
        kernels,
        jnp.asarray(x.numpy()),
        jnp.asarray(y.numpy()),
        {role: Unstructured(sparsity) for role in ROLES},
        kind="gated",
        activation="silu",
        **options,
    )
    seconds = time.perf_counter() - start
    weights = {role: torch.as_tensor(np.asarray(solution.kernels[role]).T.copy()) for role in ROLES}
    return {
        "weights": weights,
        "seconds": seconds,
        "iterate_errors": [float(e) for e in solution.output_error],
        "objective": [float(o) for o in solution.objective],
    }


def sparsity_of(weights: dict[str, Any]) -> float:
    """Fraction of zeros over the MLP's three weights."""
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / sum(w.numel() for w in weights.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo-dir", required=True, help="checkout of BaiTheBest/SparseLLM")
    parser.add_argument("--sparsity", type=float, default=0.7)
    parser.add_argument("--blocks", type=int, nargs="+", default=[2, 11, 20, 27])
    parser.add_argument(
        "--s-lr", type=float, help="the original's s learning rate (its code: 0.01), as there"
    )
    parser.add_argument(
        "--refit-percdamp",
        type=float,
        nargs="*",
        default=[1e-4],
        help="also run every option set with these refit ridges (jaxprune's default: 0.01)",
    )
    protocol.add_protocol_args(parser)
    args = parser.parse_args()
    if not all(r > 0 for r in args.refit_percdamp):
        parser.error(f"--refit-percdamp values must be positive, got {args.refit_percdamp}")
    if args.s_lr is not None and not args.s_lr >= 0:
        parser.error(f"--s-lr must be 0 or more, got {args.s_lr}")
    if min(args.blocks) < 0:
        parser.error(f"--blocks must be block indices (0 or more), got {args.blocks}")
    utils = import_model_utils(args.repo_dir, args.s_lr)

    import jaxprune as jp

    pre = jp.load_pretrained(args.model)
    calib, _ = protocol.windows(pre, args)
    tm = protocol.TorchModel(pre, args.hf_dir, "sdpa")
    dense_model = tm.load()
    n_blocks = len(dense_model.model.layers)
    bad = [b for b in args.blocks if not 0 <= b < n_blocks]
    if bad:
        parser.error(f"--blocks {bad}: the model has blocks 0..{n_blocks - 1}")
    rows = []
    for block in args.blocks:
        h, x = block_inputs(dense_model, calib, block)
        mlp = dense_model.model.layers[block].mlp
        dense = {role: getattr(mlp, name).weight.detach().clone() for role, name in ROLES.items()}
        y = mlp_output(dense, x)
        theirs = original_block(utils, tm, h, block, args.sparsity)
        row: dict[str, Any] = {
            "block": block,
            "tokens": int(x.shape[0]),
            "original": {
                "output_error": output_error(y, mlp_output(theirs["weights"], x)),
                "sparsity": sparsity_of(theirs["weights"]),
                "seconds": theirs["seconds"],
            },
        }
        for name, options in variants(args.refit_percdamp).items():
            ours = jaxprune_block(dense, x, y, args.sparsity, options)
            row[name] = {
                "options": options,
                "output_error": output_error(y, mlp_output(ours["weights"], x)),
                "iterate_errors": ours["iterate_errors"],
                "objective": ours["objective"],
                "sparsity": sparsity_of(ours["weights"]),
                "seconds": ours["seconds"],
            }
        rows.append(row)
        errors = {k: v["output_error"] for k, v in row.items() if isinstance(v, dict)}
        print({"block": block, **errors}, flush=True)
        write_json(
            args.out,
            {
                "what": f"{args.model}: one MLP's SparseLLM solve, the original's vs jaxprune's",
                **protocol.provenance(SPARSELLM, args),
                "rows": rows,
            },
        )


if __name__ == "__main__":
    main()
