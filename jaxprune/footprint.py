"""Per-device memory of a one-shot prune, from a Hugging Face ``config.json`` alone.

:func:`plan` answers "does this run fit?" before anything is downloaded or compiled::

    from jaxprune import footprint

    shapes = footprint.Shapes.from_hf_config(json.load(open("config.json")))
    peak = footprint.plan(shapes, footprint.Job("sparsegpt", mesh=(8, 1), nsamples=128,
                                                seqlen=2048, dtype_bytes=2))
    peak.peak_bytes, peak.categories      # bytes per device; params/activations/statistics/solver

The engine (:mod:`jaxprune.engine`) runs a block in three phases, and the peak is the largest:

* **capture**: the params on the device, every window's hidden state into the block, the
  statistics (old and new state while one batch is added: the step does not donate), and one
  batch's forward step (the block's params, its input and output, the taps, XLA's temporaries);
* **solve**: params, hidden states, statistics, and the solver's work for the largest kernel
  group (SparseLLM: the MLP's float32 inputs and outputs, its auxiliary variables and its Gram
  and SparseGPT work);
* **propagate**: params, the hidden states into *and* out of the block, one forward step.

Each term is one formula in the shapes, per device of a ``(data, model)`` mesh: windows split over
``data``, kernels by output columns over ``model`` (solvers over all devices), statistics
replicated. The forward step, the statistics update and every solver's compiled program are
checked against XLA's own ``compiled.memory_analysis()`` at small shapes
(``tests/test_footprint.py``, within 15%); the coefficients (the 5.5 ``d_in²`` of SparseGPT's
sweep, the 13 bytes per weight of a score-and-select solver) are what XLA allocates there.

Mixture-of-experts configs (``num_local_experts``/``num_experts``) have per-expert statistics
(``experts ×`` the MLP taps' ``d²``), a forward step that runs every expert on every token (its
``experts × tokens × f`` hidden activations are a tap and a temporary), a statistics step that
masks each expert's copy of its inputs (``4 · experts · tokens · (d + f)`` bytes), and solvers
batched over the experts (``experts ×`` one expert's solver); experts split over ``model``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

PLANNED_METHODS = ("magnitude", "wanda", "ria", "sparsegpt", "sparsellm")
F32 = 4


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The widths of a decoder-only transformer (LLaMA-style gated MLP, or OPT's ReLU MLP; with
    ``experts`` > 0 a mixture of that many gated experts of width ``intermediate``)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    gated: bool = True
    experts: int = 0

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> Shapes:
        """The shapes a Hugging Face ``config.json`` describes (no weights needed)."""
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            gated = config.get("model_type") != "opt"
            experts = int(config.get("num_experts") or config.get("num_local_experts") or 0)
            width = "moe_intermediate_size" if "moe_intermediate_size" in config else None
            intermediate = int(config[width or ("intermediate_size" if gated else "ffn_dim")])
            return cls(
                hidden=hidden,
                intermediate=intermediate,
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab=int(config["vocab_size"]),
                tied=bool(config.get("tie_word_embeddings", False)),
                gated=gated,
                experts=experts,
            )
        except KeyError as err:
            raise ValueError(f"config.json has no {err.args[0]!r}; is it a decoder LLM?") from None

    def kernel_groups(self) -> list[tuple[int, int]]:
        """``(d_in, d_out)`` of each group of linears solved together (one shared input)."""
        d, f, attn = self.hidden, self.intermediate, self.heads * self.head_dim
        qkv = attn + 2 * self.kv_heads * self.head_dim
        e = max(self.experts, 1)
        return [(d, qkv), (attn, d), (d, e * (2 * f if self.gated else f)), (e * f, d)]

    def solve_units(self) -> list[tuple[int, int, int]]:
        """``(d_in, d_out, copies)`` of each solve: one kernel group, or a stacked expert
        projection solved for all its experts at once (``copies`` experts)."""
        if not self.experts:
            return [(i, o, 1) for i, o in self.kernel_groups()]
        d, f, e = self.hidden, self.intermediate, self.experts
        return [(i, o, 1) for i, o in self.kernel_groups()[:2]] + [(d, f, e)] * 2 + [(f, d, e)]

    @property
    def taps(self) -> list[int]:
        """The input widths of a block's linears: attention, attention output, MLP, MLP down
        (each expert's MLP taps apart)."""
        attention = [self.hidden, self.heads * self.head_dim]
        return attention + [self.hidden, self.intermediate] * max(self.experts, 1)

    @property
    def block_params(self) -> int:
        router = self.hidden * self.experts
        return sum(i * o for i, o in self.kernel_groups()) + 2 * self.hidden + router

    @property
    def outer_params(self) -> int:
        """Embedding, final norm and (untied) LM head."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.outer_params


@dataclasses.dataclass(frozen=True)
class Job:
    """What a prune runs: method, mesh ``(data, model)``, calibration windows, dtype, options."""

    method: str
    mesh: tuple[int, int] = (1, 1)
    nsamples: int = 128
    seqlen: int = 2048
    dtype_bytes: int = 2
    batch_size: int = 8
    offload: bool = False
    owl: bool = False
    blocksize: int = 128
    chunk_tokens: int = 16384

    def __post_init__(self):
        if self.method not in PLANNED_METHODS:
            raise ValueError(
                f"no memory formula for method {self.method!r}; formulas exist for "
                f"{', '.join(PLANNED_METHODS)}"
            )
        if self.nsamples % self.mesh[0]:
            raise ValueError(
                f"{self.nsamples} windows do not split over a data axis of {self.mesh[0]}"
            )

    @property
    def devices(self) -> int:
        return self.mesh[0] * self.mesh[1]

    @property
    def windows_per_device(self) -> int:
        """Windows of one forward batch on one device (the engine's batch size over ``data``)."""
        data = self.mesh[0]
        limit = min(self.nsamples, max(self.batch_size, data))
        batch = max(b for b in range(data, limit + 1, data) if self.nsamples % b == 0)
        return batch // data


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Bytes per device: each category at its largest, each phase's total, and the peak."""

    categories: dict[str, int]
    phases: dict[str, int]

    @property
    def peak_bytes(self) -> int:
        return max(self.phases.values())

    def fits(self, device_bytes: int) -> bool:
        return self.peak_bytes <= device_bytes


def forward_step(s: Shapes, windows: int, seqlen: int, b: int, model: int = 1) -> int:
    """One batch of ``windows`` through a block: params, input, output, taps, XLA temporaries
    (the float32 attention scores and the MLP's hidden activations, whichever is larger)."""
    tokens = windows * seqlen
    heads, f = _split(s.heads, model), _split(s.intermediate, model)
    taps = tokens * sum(s.taps) * b
    temporaries = F32 * max(2 * windows * heads * seqlen**2, 2 * tokens * f)
    if s.experts:  # every expert on every token: hidden activations, routing weights, masks
        e, attention = _split(s.experts, model), s.heads * s.head_dim
        taps = tokens * (3 * s.hidden + attention) * b + tokens * e * (f * b + 6)
        temporaries = F32 * (2 * tokens * e * f + windows * heads * seqlen**2)
    return _split(s.block_params, model) * b + 2 * tokens * s.hidden * b + taps + temporaries


def masked_inputs(s: Shapes, windows: int, seqlen: int, model: int = 1) -> int:
    """The statistics step's per-expert masked copies of one batch's expert inputs (float32;
    0 for a dense model)."""
    return F32 * _split(s.experts, model) * windows * seqlen * (s.hidden + s.intermediate)


def statistics(widths: list[int], hessian: bool) -> int:
    """A block's float32 statistics: per tap ``d²`` (Hessian) and ``d`` (squared norms)."""
    return F32 * sum(d * d * hessian + d for d in widths)


def sparsegpt_solver(d_in: int, d_out: int, b: int, blocksize: int = 128) -> int:
    """SparseGPT on ``d_out`` columns with a shared ``d_in × d_in`` Hessian: kernel in and out,
    mask, Hessian, and the sweep's temporaries (inverse factor, one block of columns)."""
    temporaries = F32 * max(5.5 * d_in * d_in, 4 * blocksize * d_out + 5 * d_in * d_in)
    return int(2 * b * d_in * d_out + d_in * d_out + F32 * d_in * d_in + temporaries)


def score_solver(d_in: int, d_out: int, b: int) -> int:
    """Magnitude, Wanda, RIA: kernel in and out, mask, and the float32 scores with their sorting
    (13 bytes per weight measured with kernels in and out, 21 in float32)."""
    return (2 * b + 13) * d_in * d_out


def sparsellm_chunk(d: int, f: int, chunk: int) -> int:
    """One chunk of SparseLLM's variable update: its ``x, y, s, z, p`` and the new ``s, z, p``
    with the update's temporaries (float32)."""
    return int(F32 * chunk * (2 * d + 10.75 * f))


def plan(s: Shapes, job: Job) -> Footprint:
    """The per-device :class:`Footprint` of pruning a model of shapes ``s`` as ``job`` says."""
    data, model = job.mesh
    b, tokens = job.dtype_bytes, job.nsamples * job.seqlen // data
    block = _split(s.block_params, model) * b
    params = (
        max(3 * block, _split(s.outer_params, model) * b)
        if job.offload
        else _split(s.params, model) * b + block
    )
    hidden = tokens * s.hidden * b
    step = forward_step(s, job.windows_per_device, job.seqlen, b, model)
    cols = job.devices
    units = [(i, o if c > 1 else _split(o, cols), _split(c, model)) for i, o, c in s.solve_units()]
    if job.method == "magnitude":
        solver = max(c * score_solver(i, o, b) for i, o, c in units)
        return Footprint(
            {"params": params, "activations": 0, "statistics": 0, "solver": solver},
            {"solve": params + solver},
        )
    hessian = job.method in ("sparsegpt", "sparsellm")
    joint = job.method == "sparsellm" and not s.experts  # MoE: SparseLLM solves per kernel
    stats = statistics(s.taps[:2] if joint else s.taps, hessian)
    if job.method in ("wanda", "ria"):
        solver = max(c * score_solver(i, o, b) for i, o, c in units)
    else:
        solver = max(c * sparsegpt_solver(i, o, b, job.blocksize) for i, o, c in units)
    activations = 2 * hidden
    masked = masked_inputs(s, job.windows_per_device, job.seqlen, model)
    if joint:
        d, f = s.hidden, s.intermediate
        inputs = 2 * F32 * tokens * d  # the MLP's inputs and dense outputs, all windows
        variables = F32 * (3 if s.gated else 2) * _split(tokens * f, model)
        work = F32 * (d * d + 6 * f * f + 9 * d * f)
        chunk = sparsellm_chunk(d, f, min(job.chunk_tokens, tokens))
        solver = max(solver, inputs + variables + work + chunk)
        activations = 2 * hidden + inputs
    phases = {
        "capture": params + hidden + 2 * stats + step + masked,
        "solve": params + hidden + stats + solver,
        "propagate": params + 2 * hidden + step,
    }
    if job.owl:
        phases["owl prepass"] = params + 2 * hidden + step + statistics(s.taps, False)
    categories = {
        "params": params,
        "activations": activations + step,
        "statistics": 2 * stats + masked,
        "solver": solver,
    }
    return Footprint(categories, phases)


def _split(n: int, parts: int) -> int:
    """``n`` over ``parts`` devices (``n`` whole when they do not divide it, as the layout does)."""
    return n // parts if n % parts == 0 else n


def parse_bytes(text: str) -> int:
    """``"80GB"``, ``"80GiB"``, ``"512MB"``, ``"1e9"`` → bytes (GB = 10⁹, GiB = 2³⁰)."""
    units = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
    units |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    clean = text.strip().upper().replace(" ", "")
    number = clean.rstrip("KMGTIB")
    try:
        value = float(number) * units[clean[len(number) :]]
    except (ValueError, KeyError):
        raise ValueError(f"{text!r} is not a memory size such as 80GB, 141GiB or 512MB") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory size {text!r} must be positive")
    return int(value)


__all__ = [
    "PLANNED_METHODS",
    "Footprint",
    "Job",
    "Shapes",
    "forward_step",
    "masked_inputs",
    "parse_bytes",
    "plan",
    "score_solver",
    "sparsegpt_solver",
    "sparsellm_chunk",
    "statistics",
]
