"""``prune``: the one-shot, layer-sequential calibration loop.

For each decoder block, in order:

1. run the block on the current hidden states of every calibration window, capturing the inputs of
   its linears ("taps") and accumulating the method's float32 statistics per tap, batch by batch;
2. prune every targeted linear of the block with the method (one solve per kernel, or one joint
   solve per MLP for SparseLLM);
3. run the block again with the pruned weights to produce the next block's inputs, so later blocks
   see the inputs of the pruned model (as the SparseGPT and Wanda reference code does).

With ``true_sequential`` steps 1-2 repeat per group of linears sharing an input (q/k/v, o, gate/up,
down), each group seeing inputs produced by the already pruned groups before it.

The engine knows models only through :class:`jaxprune.models.LanguageModel` and its family record,
and methods only through :class:`jaxprune.methods.Method`. Only one block's activations are
processed at a time; the hidden states of all windows are kept as a list of batches
``(batch, seq, hidden)``. With ``mesh=`` every array is placed by a
:class:`jaxprune.sharding.Layout` (batches of windows over ``data``, kernels by their output
columns over ``model``); with ``offload=True`` the params stay on the host and one block at a time
visits the devices.

Device memory, with ``b`` bytes per param/activation, ``n × T`` calibration tokens of width ``d``,
batches of ``B`` windows and the widest MLP ``f``:

    hidden states      2·n·T·d·b          (one block's inputs and outputs)
    one batch's taps   B·T·(3d + f)·(b + 4)
    statistics         4·Σ_taps d_tap²    (float32 Hessians; ``4·Σ d_tap`` for Wanda/RIA)
    solver             4·(4·d_in² + 3·d_in·d_out)   for the largest kernel group (SparseGPT)
    params             2 blocks with ``offload``; otherwise the whole model, plus the pruned
                       kernels while the caller still holds the dense ones

At LLaMA-2-7B shape in bfloat16 with 128 × 2048 tokens and ``offload=True`` that is about
4.3 + 0.8 + 0.7 + 2.5 + 0.8 ≈ 9 GB; without offload the model's 13.5 GB come on top (twice for
the kernels while both copies live). :mod:`jaxprune.footprint` (``jaxprune plan``) has the
per-device formulas checked against XLA's allocations, attention temporaries included.
"""

from __future__ import annotations

import jax
import numpy as np

import jaxprune.engine.calibrate as calibrate
import jaxprune.engine.prepass as prepass
from jaxprune import allocation
from jaxprune.core.paths import get_leaf
from jaxprune.engine.block import Solver, prune_block, solve_kernel
from jaxprune.engine.placement import Placement
from jaxprune.engine.plan import PrunePlan
from jaxprune.engine.report import PruneLog, PruneResult, Solved, progress_bar, record
from jaxprune.methods.base import get_method
from jaxprune.models.base import LanguageModel, Params
from jaxprune.recipes import Recipe
from jaxprune.sharding import Layout


def prune(
    model: LanguageModel,
    params: Params,
    calibration: np.ndarray | jax.Array | None,
    recipe: Recipe,
    *,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
    offload: bool = False,
    errors: bool | None = None,
    profile: bool = False,
) -> PruneResult:
    """Prunes ``params`` of ``model`` one-shot as ``recipe`` says.

    Args:
      model: the architecture (:class:`jaxprune.models.LanguageModel`).
      params: nested-dict params of that model; not modified.
      calibration: int calibration tokens ``(n, seqlen)`` (see :func:`jaxprune.data.load_windows`);
        needed by every method except magnitude, which accepts ``None`` (unless
        ``recipe.allocation`` is ``owl``, whose outlier pass runs on them).
      recipe: a :class:`jaxprune.recipes.Recipe` (validated when it was made).
      progress: show progress bars.
      mesh: a ``("data", "model")`` mesh (:func:`jaxprune.sharding.make_mesh`) to prune on:
        windows split over ``data`` (their number must be a multiple of its size), kernels by
        output columns over ``model`` (the family's partition rules). The result equals the
        single-device one (SparseLLM's joint MLP solve: up to float rounding, which can flip a
        near-tied mask entry). ``None``: JAX's default device.
      offload: keep the params on the host (NumPy) and move one block at a time to the devices,
        for models larger than device memory; the returned params and masks are host arrays (in
        a multi-process run :class:`jaxprune.sharding.HostShards`: each process keeps only the
        shards its devices held).
      errors: which per-linear relative reconstruction errors the report gets: ``None`` those
        that cost no extra work (methods with a Hessian, jointly solved MLPs), ``True`` all
        (Wanda and RIA then pay two extra matrix products per kernel and token), ``False`` none.
      profile: split the passes' time into ``forward_seconds`` and ``stats_seconds``, waiting for
        the device after every batch (off: batches are queued without host round trips).

    Returns:
      :class:`PruneResult` with the pruned params, keep-masks and a report (per linear: sparsity,
      relative reconstruction error on the calibration inputs, seconds; totals and timings).

    Raises:
      ValueError: a target matches nothing or suits neither the method nor the allocation, the
        calibration windows are missing or misshapen, or a multi-process run without a mesh.

    Example:
      Wanda at 2:4 on a tiny random LLaMA, calibrated on four windows of random token ids:

      >>> import numpy as np
      >>> import jaxprune as jp
      >>> model = jp.LanguageModel(jp.LlamaConfig(vocab_size=64, hidden_size=32,
      ...     intermediate_size=64, num_hidden_layers=2, num_attention_heads=4))
      >>> params = model.init_params(seed=0)
      >>> calib = np.random.default_rng(0).integers(0, 64, (4, 16))
      >>> result = jp.prune(model, params, calib, jp.Recipe(method="wanda", sparsity="2:4"),
      ...                   progress=False)
      >>> down = result.params["layers"][0]["mlp"]["down_proj"]["kernel"]
      >>> float((down == 0).mean()), result.masks["layers"][0]["mlp"]["down_proj"]["kernel"].dtype
      (0.5, dtype('bool'))
    """
    if mesh is None and jax.process_count() > 1:
        raise ValueError(
            f"this is one of {jax.process_count()} processes; give a mesh over all their devices "
            "(jaxprune.sharding.make_mesh) so that they prune one model together"
        )
    method = get_method(recipe.method)
    plan = PrunePlan.build(model, params, recipe, method)
    layout = None if mesh is None else Layout(mesh, model.family.partition_rules)
    placement, log = Placement(model, layout, offload), PruneLog(method, recipe, profile)
    solver = Solver(method, method.resolve_options(recipe.options), layout, log, errors)
    params = placement.initial(params)
    runner = hidden = block_sparsity = None
    if plan.calibrated:
        runner, hidden = calibrate.start(
            model, params, calibration, recipe, method, placement, log, profile
        )
    if recipe.allocation == "owl":
        block_sparsity, ratios = prepass.owl_block_sparsity(
            plan, params, hidden, recipe, runner, placement, progress
        )
        log.allocation = {"outlier_ratio": ratios, "block_sparsity": block_sparsity}
    targets = allocation.targets_for(recipe, plan.paths, model.block_of, block_sparsity)
    if not method.needs_inputs:
        for path in progress_bar(plan.paths, progress, method.name):
            kernel = placement.leaf(path, get_leaf(params, path))
            new, keep, seconds = solve_kernel(solver, kernel, None, targets[path])
            solved = Solved(new, keep, record(targets[path], seconds))
            log.add({path: solved})
            solved.kernel, solved.keep = placement.to_host((new, keep))
        return log.finish(params, plan.paths, calibration)
    blocks = placement.blocks(params)
    for block in progress_bar(plan.blocks, progress, f"{method.name} blocks"):
        result = prune_block(block, next(blocks), hidden, solver, targets, runner)
        log.add(result.solved, result.joint)
        hidden, block_params = result.hidden, placement.to_host(result.params)
        for path, solved in result.solved.items():
            solved.kernel = get_leaf(block_params, model.block_of(path)[1])
            solved.keep = placement.to_host(solved.keep)
        params = model.with_block_params(params, block.index, block_params)
    return log.finish(params, plan.paths, calibration)
