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
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

import jaxprune.models.continuations as continuations

Params = dict[str, Any]

_BLOCK_PATH = re.compile(r"layers/(\d+)/(.+)")


# Activations a gated MLP may use (their derivatives live with the joint solvers that need them:
# jaxprune.methods.sparsellm_steps.ACTIVATIONS).
GATED_ACTIVATIONS = ("silu", "gelu_tanh")


@dataclasses.dataclass(frozen=True)
class MlpSpec:
    """A block's MLP as joint solvers (SparseLLM) see it.

    Attributes:
      kind: ``"gated"`` (roles ``gate``, ``up``, ``down``: ``down(act(gate(x)) * up(x))``, no
        biases) or ``"relu"`` (roles ``in``, ``out``: ``out(relu(in(x)))``, with biases); see
        :data:`jaxprune.methods.sparsellm_steps.ROLES`.
      roles: ``(role, block-relative path of the linear)`` pairs, the output projection last.
      activation: the activation, by name: one of :data:`GATED_ACTIVATIONS` for ``"gated"``
        (``"silu"``: SwiGLU, LLaMA; ``"gelu_tanh"``: GELU with the tanh approximation, Gemma),
        ``"relu"`` for ``"relu"``.
      in_tap: the tap holding the MLP's input.
      out_tap: the tap holding the output projection's input.
    """

    kind: str
    roles: tuple[tuple[str, str], ...]
    activation: str
    in_tap: str = "mlp_in"
    out_tap: str = "down_in"

    def __post_init__(self):
        allowed = {"gated": GATED_ACTIVATIONS, "relu": ("relu",)}
        if self.kind not in allowed:
            raise ValueError(f"MLP kind must be one of {sorted(allowed)}, got {self.kind!r}")
        if self.activation not in allowed[self.kind]:
            raise ValueError(
                f"a {self.kind} MLP's activation must be one of {allowed[self.kind]}, "
                f"got {self.activation!r}"
            )

    @property
    def paths(self) -> dict[str, str]:
        """``{role: block-relative path}``."""
        return dict(self.roles)


class LayerWidths(NamedTuple):
    """The prunable widths of one decoder block: query heads, key/value heads, MLP channels."""

    heads: int
    kv_heads: int
    mlp: int


@dataclasses.dataclass(frozen=True)
class StructureSpec:
    """A block's coupled groups, for structured pruning (block-relative linear paths).

    An attention head is the ``head_dim`` output columns of ``query`` (and, for its key/value
    head, of ``key`` and ``value``) plus the matching input rows of ``attn_out``; an MLP channel is
    one output column of every ``mlp_in`` linear plus one input row of ``mlp_out``. The widths of
    block ``i`` are ``config.layer_widths(i)`` (:class:`LayerWidths`); a config with other widths
    is ``config.with_layer_widths(widths)``, and ``config.with_output_biases()`` is the config
    whose ``attn_out`` and ``mlp_out`` carry biases (FLAP's bias compensation). ``embeddings``
    are the top-level params that do not count as "non-embedding" parameters.
    """

    query: str
    key: str
    value: str
    attn_out: str
    mlp_in: tuple[str, ...]
    mlp_out: str
    embeddings: tuple[str, ...] = ("embed_tokens", "embed_positions", "lm_head")


def per_layer_widths(values: Any, layers: int, name: str) -> tuple[int, ...] | None:
    """``values`` as a tuple of ``layers`` positive ints (``None`` stays ``None``: uniform).

    Raises:
      ValueError: naming the field, when the count or a value is wrong.
    """
    if values is None:
        return None
    values = tuple(values)
    if len(values) != layers or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(
            f"{name} must hold one positive int per layer ({layers}), got {list(values)}"
        )
    return values


@dataclasses.dataclass(frozen=True)
class HfSpec:
    """How a family reads Hugging Face checkpoints (``config.json`` + safetensors).

    Attributes:
      model_types: the ``model_type`` values of ``config.json`` this family loads.
      config_from_hf: ``config_from_hf(config_json_dict) -> config``.
      params_from_hf: ``params_from_hf(tensors, config, dtype) -> params``; ``tensors`` maps
        Hugging Face names to NumPy arrays (read lazily).
      config_to_hf: ``config_to_hf(config) -> config_json_dict``, the other direction; raises
        ``ValueError`` for what transformers' class cannot hold (blocks of different widths).
      params_to_hf: ``params_to_hf(params, config) -> {Hugging Face name: array}``.
      stacked: ``stacked(config) -> {param path: tensor names}`` of params stacked from one
        ``(out, in)`` tensor per expert into an ``(experts, in, out)`` kernel (mixture-of-experts
        families), so the sliced loader reads them expert by expert; ``None``: no such params.
    """

    model_types: tuple[str, ...]
    config_from_hf: Callable[[dict[str, Any]], Any]
    params_from_hf: Callable[[Mapping[str, np.ndarray], Any, Any], Params]
    config_to_hf: Callable[[Any], dict[str, Any]] | None = None
    params_to_hf: Callable[[Params, Any], dict[str, Any]] | None = None
    stacked: Callable[[Any], dict[str, tuple[str, ...]]] | None = None


@dataclasses.dataclass(frozen=True)
class GgufSpec:
    """How a family reads llama.cpp GGUF files of one architecture.

    The GGUF loader renames the tensors to Hugging Face names, turns the metadata into a
    ``config.json``-style dict and hands both to the family's :class:`HfSpec`; this record holds
    what differs between architectures.

    Attributes:
      architecture: the file's ``general.architecture``.
      block_names: ``(GGUF per-block tensor stem, Hugging Face name after "model.layers.{i}.")``
        pairs beyond (or replacing) llama.cpp's common ones (``attn_q``, ..., ``attn_norm``).
      config_keys: ``(metadata key after "{architecture}.", config.json key)`` pairs beyond the
        common ones (block count, widths, heads, norm epsilon, RoPE base, context length).
      norm_offset: the file stores every norm weight ``w`` as ``w + norm_offset`` (llama.cpp adds
        1 to Gemma's ``(1 + w)``-scaled RMSNorm weights).
      rotary_rows_permuted: q/k projection rows are in llama.cpp's interleaved rotary order (its
        LLaMA converter permutes them; Gemma's does not).
    """

    architecture: str
    block_names: tuple[tuple[str, str], ...] = ()
    config_keys: tuple[tuple[str, str], ...] = ()
    norm_offset: float = 0.0
    rotary_rows_permuted: bool = False


@dataclasses.dataclass(frozen=True)
class Family:
    """Everything jaxprune knows about one architecture, declared in the family's own file.

    Attributes:
      name: the family name, also ``config.family``.
      config_cls: its config dataclass (``to_dict``/``from_dict``).
      module_cls: its NNX module, ``module_cls(config, rngs=..., dtype=...)``; blocks live at
        ``module.layers[i]`` and params at ``params["layers"][i]``.
      sequential_groups: ``(tap, linears reading that tap)`` in the order a "true sequential"
        prune visits them; linears are block-relative paths (``"mlp/up_proj"``).
      default_targets: regex of the leaf paths pruned by default.
      partition_rules: ``(path regex, PartitionSpec)`` pairs placing params on a
        ``("data", "model")`` mesh (see :mod:`jaxprune.sharding`).
      mlp: the MLP for joint solvers, or ``None`` (then they prune it per kernel).
      hf: how to read Hugging Face checkpoints, or ``None``.
      gguf: how to read GGUF files (through ``hf``), or ``None``.
      structure: the coupled groups for structured pruning, or ``None`` (not supported).
      bos: whether every sequence should start with BOS (Gemma); then every path adds it.
    """

    name: str
    config_cls: type
    module_cls: type
    sequential_groups: tuple[tuple[str, tuple[str, ...]], ...]
    default_targets: str
    partition_rules: tuple[tuple[str, PartitionSpec], ...] = ()
    mlp: MlpSpec | None = None
    hf: HfSpec | None = None
    gguf: GgufSpec | None = None
    structure: StructureSpec | None = None
    bos: bool = False

    @property
    def tap_of(self) -> dict[str, str]:
        """``{block-relative linear path: the tap it reads}``."""
        return {name: tap for tap, names in self.sequential_groups for name in names}


FAMILIES: dict[str, Family] = {}


def register_family(family: Family, *, overwrite: bool = False) -> Family:
    """Adds ``family`` to :data:`FAMILIES` (each family file calls this at its end).

    Raises:
      ValueError: the name, or one of its Hugging Face model types, is taken (and not
        ``overwrite``).
    """
    if not overwrite:
        if family.name in FAMILIES:
            raise ValueError(f"a model family named {family.name!r} is already registered")
        taken = sorted(
            t for t in (family.hf.model_types if family.hf else ()) if _hf_owner(t) is not None
        )
        if taken:
            raise ValueError(f"model types {taken} are already loaded by another family")
    FAMILIES[family.name] = family
    return family


def _hf_owner(model_type: str) -> Family | None:
    for family in FAMILIES.values():
        if family.hf is not None and model_type in family.hf.model_types:
            return family
    return None


def family_of(config: Any) -> Family:
    """The registered family of ``config`` (by its ``family`` attribute)."""
    name = getattr(config, "family", None)
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_for_model_type(model_type: str | None) -> Family:
    """The family that loads Hugging Face checkpoints of ``model_type``.

    Raises:
      ValueError: naming the supported model types.
    """
    family = None if model_type is None else _hf_owner(model_type)
    if family is None:
        raise ValueError(
            f"model_type {model_type!r} is not supported; supported model types: "
            f"{', '.join(supported_model_types())}"
        )
    return family


def supported_model_types() -> list[str]:
    """Every Hugging Face ``model_type`` some registered family loads."""
    return sorted(t for f in FAMILIES.values() if f.hf is not None for t in f.hf.model_types)


def family_for_gguf_architecture(architecture: str | None) -> Family:
    """The family that loads GGUF files of ``architecture`` (``general.architecture``).

    Raises:
      ValueError: naming the supported architectures.
    """
    readers = {f.gguf.architecture: f for f in FAMILIES.values() if f.gguf and f.hf}
    if architecture not in readers:
        raise ValueError(
            f"GGUF architecture {architecture!r} is not supported (supported: "
            f"{', '.join(sorted(readers))})"
        )
    return readers[architecture]


def config_from_dict(d: dict[str, Any]) -> Any:
    """Rebuilds a family config from ``{"family": ..., **fields}`` (as written by ``to_dict``)."""
    name = d.get("family", d.get("model_type", "llama"))
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[name].config_cls.from_dict(d)


def config_to_dict(config: Any) -> dict[str, Any]:
    return {"family": config.family, **config.to_dict()}


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """A causal LM of some family, applied to nested-dict params. Holds no weights."""

    config: Any
    dtype: Any = jnp.float32

    # The key of the decoder blocks in the params (``params["layers"][i]``).
    BLOCKS: ClassVar[str] = "layers"

    @property
    def family(self) -> Family:
        return family_of(self.config)

    @property
    def num_blocks(self) -> int:
        return self.config.num_hidden_layers

    # Blocks may differ in width (a structurally pruned model): their modules read the head counts
    # and MLP width from their params' shapes, so block 0's graph definition serves every block.
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
        return nnx.to_pure_dict(nnx.state(module, nnx.Param))

    def module(self, params: Params) -> nnx.Module:
        """The NNX module carrying ``params`` (works inside ``jit``)."""
        return nnx.merge(self._graphdefs[0], params)

    def logits(self, params: Params, tokens: jax.Array) -> jax.Array:
        return self.module(params)(tokens)

    def hidden_states(self, params: Params, tokens: jax.Array) -> jax.Array:
        """The last block's output: ``logits(params, t) == head(params, hidden_states(params, t))``.

        Scoring a few positions of long rows applies the head (a vocabulary-wide product) to
        those positions only (:mod:`jaxprune.eval.zeroshot`).
        """
        return self.module(params).hidden_states(tokens)

    def shares_contexts(self, params: Params) -> bool:
        """Whether :meth:`continuation_sums` applies: every block's attention reads the KV cache,
        and the blocks share one shape (it compiles one step per block shape)."""
        blocks = (self.block_params(params, i) for i in range(self.num_blocks))
        shapes = {str(jax.tree.map(jnp.shape, block)) for block in blocks}
        return len(shapes) == 1 and continuations.reads_cache(self, params)

    def continuation_sums(self, params: Params, *batch: np.ndarray) -> np.ndarray:
        """:func:`jaxprune.models.continuations.continuation_sums` of this model."""
        return continuations.continuation_sums(self, params, *batch)

    def embed(self, params: Params, tokens: jax.Array) -> jax.Array:
        return self.module(params).embed(tokens)

    def head(self, params: Params, hidden: jax.Array) -> jax.Array:
        return self.module(params).head(hidden)

    def block(
        self,
        block_params: Params,
        hidden: jax.Array,
        capture: bool = False,
        index: int | jax.Array | None = None,
        positions: jax.Array | None = None,
    ):
        """Runs one decoder block; with ``capture`` returns ``(hidden, {tap: input})``.

        ``index``: the block's place in the stack, an int or a traced int32 (one compiled step
        serves every block); blocks that differ by place (Gemma 3's sliding/global attention) need
        it. ``positions`` default to ``0..seq-1`` (a cached decoding step passes later ones).
        """
        block = nnx.merge(self._graphdefs[1], block_params)
        positions = jnp.arange(hidden.shape[-2]) if positions is None else positions
        return block(hidden, positions, capture=capture, layer=index)

    def block_params(self, params: Params, index: int) -> Params:
        return params[self.BLOCKS][index]

    def block_prefix(self, index: int) -> str:
        """The path prefix of block ``index``'s leaves (``"layers/3/"``)."""
        return f"{self.BLOCKS}/{index}/"

    def block_of(self, path: str) -> tuple[int, str] | None:
        """``(block index, block-relative path)`` of a leaf path, or ``None`` outside the blocks.

        ``"layers/3/mlp/up_proj/kernel"`` → ``(3, "mlp/up_proj/kernel")``.
        """
        match = _BLOCK_PATH.fullmatch(path)
        return None if match is None else (int(match[1]), match[2])

    def with_block_params(self, params: Params, index: int, block_params: Params) -> Params:
        """A shallow copy of ``params`` whose block ``index`` is replaced."""
        layers = dict(params[self.BLOCKS])
        layers[index] = block_params
        return {**params, self.BLOCKS: layers}
