"""A model family seen through the small protocol that the rest of jaxprune uses.

Pruning code works on plain nested-dict params (``{"layers": {0: {"mlp": {"up_proj": {"kernel":
...}}}}}``). :class:`LanguageModel` turns those dicts back into the NNX modules of a family when it
needs to run them: ``embed``, one ``block`` at a time (optionally returning the inputs of its
linears), ``head``, and the whole ``logits``. It holds no arrays, so it is cheap to pass around and
hashable, which lets it be a static argument of ``jax.jit``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Family:
    """What jaxprune needs to know about one architecture."""

    name: str
    config_cls: type
    module_cls: type
    # (tap name, linears reading that tap), in the order a "true sequential" prune visits them.
    sequential_groups: tuple[tuple[str, tuple[str, ...]], ...]
    # Regex of leaf paths pruned by default (relative to the params root).
    default_targets: str
    # The MLP as joint solvers see it: its activation ("swiglu" or "relu") and
    # (solver name, block-relative path) of each linear; its input is tap "mlp_in" and its
    # output projection reads tap "down_in".
    mlp_kind: str = "swiglu"
    mlp_linears: tuple[tuple[str, str], ...] = ()


def _families() -> dict[str, Family]:
    from jaxprune.models import llama

    families = {
        "llama": Family(
            "llama",
            llama.LlamaConfig,
            llama.LlamaForCausalLM,
            llama.SEQUENTIAL_GROUPS,
            r"layers/\d+/(self_attn|mlp)/\w+_proj/kernel",
            mlp_kind="swiglu",
            mlp_linears=(
                ("gate_proj", "mlp/gate_proj"),
                ("up_proj", "mlp/up_proj"),
                ("down_proj", "mlp/down_proj"),
            ),
        )
    }
    try:
        from jaxprune.models import opt
    except ImportError:  # the OPT family is optional until it lands
        return families
    families["opt"] = Family(
        "opt",
        opt.OPTConfig,
        opt.OPTForCausalLM,
        opt.SEQUENTIAL_GROUPS,
        opt.DEFAULT_TARGETS,
        mlp_kind="relu",
        mlp_linears=(("fc1", "fc1"), ("fc2", "fc2")),
    )
    return families


def family_of(config: Any) -> Family:
    families = _families()
    name = getattr(config, "family", None)
    if name not in families:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(families)}")
    return families[name]


def config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuilds a family config from ``{"family": ..., **fields}`` (as written by ``to_dict``)."""
    families = _families()
    name = d.get("family", d.get("model_type", "llama"))
    if name not in families:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(families)}")
    return families[name].config_cls.from_dict(d)


def config_to_dict(config: Any) -> dict[str, Any]:
    return {"family": config.family, **config.to_dict()}


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """A causal LM of some family, applied to nested-dict params. Holds no weights."""

    config: Any
    dtype: Any = jnp.float32

    @property
    def family(self) -> Family:
        return family_of(self.config)

    @property
    def num_blocks(self) -> int:
        return self.config.num_hidden_layers

    @functools.cached_property
    def _graphdefs(self):
        abstract = nnx.eval_shape(
            lambda: self.family.module_cls(self.config, rngs=nnx.Rngs(0), dtype=self.dtype)
        )
        graphdef, _ = nnx.split(abstract)
        block_graphdef, _ = nnx.split(abstract.layers[0])
        return graphdef, block_graphdef

    def init_params(self, seed: int = 0) -> Params:
        """Random params (for tests and benchmarks), as a nested dict."""
        module = self.family.module_cls(self.config, rngs=nnx.Rngs(seed), dtype=self.dtype)
        return nnx.state(module, nnx.Param).to_pure_dict()

    def module(self, params: Params) -> nnx.Module:
        """The NNX module carrying ``params`` (works inside ``jit``)."""
        return nnx.merge(self._graphdefs[0], params)

    def logits(self, params: Params, tokens: jax.Array) -> jax.Array:
        return self.module(params)(tokens)

    def embed(self, params: Params, tokens: jax.Array) -> jax.Array:
        return self.module(params).embed(tokens)

    def head(self, params: Params, hidden: jax.Array) -> jax.Array:
        return self.module(params).head(hidden)

    def block(self, block_params: Params, hidden: jax.Array, capture: bool = False):
        """Runs one decoder block; with ``capture`` returns ``(hidden, {tap: input})``."""
        block = nnx.merge(self._graphdefs[1], block_params)
        positions = jnp.arange(hidden.shape[-2])
        return block(hidden, positions, capture=capture)

    def block_params(self, params: Params, index: int) -> Params:
        return params["layers"][index]

    def with_block_params(self, params: Params, index: int, block_params: Params) -> Params:
        """A shallow copy of ``params`` whose block ``index`` is replaced."""
        layers = dict(params["layers"])
        layers[index] = block_params
        return {**params, "layers": layers}
