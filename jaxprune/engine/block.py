"""Pruning one decoder block: capture its inputs, solve its linears, propagate its outputs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

import jaxprune.engine.experts as experts
from jaxprune.core.paths import get_leaf, set_leaves
from jaxprune.core.sparsity import Target
from jaxprune.engine.calibrate import BlockRunner, Checks
from jaxprune.engine.plan import BlockPlan, JointMlp, TapGroup
from jaxprune.engine.report import PruneLog, Solved, record
from jaxprune.methods.base import JointUnit, Method
from jaxprune.models.base import Params
from jaxprune.sharding import Layout, place_like


@dataclasses.dataclass(frozen=True)
class Solver:
    """A method with its resolved options, on one device or a mesh, reporting into a log.

    ``errors`` says which relative reconstruction errors ‖X(W − Ŵ)‖²/‖XW‖² the report gets:
    ``None`` (default) those that cost no extra pass over the data — every kernel whose method
    holds a Hessian ``H ∝ XᵀX``, from ``tr(ΔᵀHΔ)/tr(WᵀHW)`` on the inputs the statistics were
    gathered from, and jointly solved MLPs, whose inputs were collected anyway, measured on the
    next pass; ``True`` also the others, with two extra matrix products per kernel and token on the
    next pass (Wanda, RIA); ``False`` none.
    """

    method: Method
    options: Mapping[str, Any]
    layout: Layout | None
    log: PruneLog
    errors: bool | None = None


@dataclasses.dataclass(frozen=True)
class BlockResult:
    """A pruned block: its params, the next block's inputs and the kernels it solved."""

    params: Params
    hidden: list[jax.Array]
    solved: dict[str, Solved]
    joint: dict[str, dict[str, Any]]


def solve_kernel(
    solver: Solver, kernel: jax.Array, stats: Any, target: Target
) -> tuple[jax.Array, jax.Array, float]:
    """``(pruned kernel, keep mask, seconds)`` of one kernel with ``solver``'s method.

    On a mesh, a method whose mask couples output columns runs its ``solve_sharded``; every other
    method's ``solve`` runs as it is on the sharded arrays. Results keep the kernel's placement.
    """
    method, layout = solver.method, solver.layout
    options = method.solve_options(solver.options)
    t0 = time.perf_counter()
    if kernel.ndim == 3:  # stacked experts, each solved on its own routed tokens
        new_kernel, keep = experts.solve_stacked(method, options, kernel, stats, target)
    elif layout is not None and method.solve_sharded is not None:
        new_kernel, keep = method.solve_sharded(kernel, stats, target, layout, **options)
    else:
        new_kernel, keep = method.solve(kernel, stats, target, **options)
    if layout is not None:
        new_kernel, keep = place_like((new_kernel, keep), kernel)
    jax.block_until_ready(new_kernel)
    seconds = time.perf_counter() - t0
    solver.log.timings["solve_seconds"] += seconds
    return new_kernel, keep, seconds


def solve_kernels(
    solver: Solver, kernels: list[jax.Array], stats: Any, targets: list[Target]
) -> tuple[list[tuple[jax.Array, jax.Array]], float]:
    """Kernels reading one input, solved together when the method can (one device), else one by
    one; returns ``[(pruned kernel, keep mask), ...]`` and the seconds per kernel."""
    method = solver.method
    grouped = method.solve_group is not None and kernels[0].ndim == 2
    if len(kernels) > 1 and grouped and solver.layout is None:
        t0 = time.perf_counter()
        results = method.solve_group(
            kernels, stats, targets, **method.solve_options(solver.options)
        )
        jax.block_until_ready(results)
        seconds = time.perf_counter() - t0
        solver.log.timings["solve_seconds"] += seconds
        return results, seconds / len(kernels)
    solved = [solve_kernel(solver, k, stats, t) for k, t in zip(kernels, targets, strict=True)]
    return [(new, keep) for new, keep, _ in solved], sum(s for *_, s in solved) / len(solved)


@jax.jit
def hessian_rel_error(hessian: jax.Array, dense: jax.Array, pruned: jax.Array) -> jax.Array:
    """‖X(W − Ŵ)‖²/‖XW‖² from ``H ∝ XᵀX``: ``tr(ΔᵀHΔ)/tr(WᵀHW)``, no pass over ``X``."""
    w = dense.astype(jnp.float32)
    delta = w - pruned.astype(jnp.float32)
    high = jax.lax.Precision.HIGH
    num = jnp.sum(jnp.matmul(hessian, delta, precision=high) * delta)
    den = jnp.sum(jnp.matmul(hessian, w, precision=high) * w)
    return num / jnp.maximum(den, 1e-30)


def solve_tap_group(
    solver: Solver,
    unit: TapGroup,
    block_params: Params,
    stats: Any,
    targets: Mapping[str, Target],
) -> tuple[Params, dict[str, Solved], Checks]:
    """Solves the linears of one tap group; returns the block params, the solved kernels and the
    error checks left for the next pass (see :class:`Solver` for which errors are measured)."""
    dense = [get_leaf(block_params, lin.kernel_path) for lin in unit.linears]
    wanted = [targets[lin.path] for lin in unit.linears]
    results, seconds = solve_kernels(solver, dense, stats, wanted)
    hessian = getattr(stats, "hessian", None)
    solved: dict[str, Solved] = {}
    checks: Checks = {}
    for lin, w, (new, keep), target in zip(unit.linears, dense, results, wanted, strict=True):
        solved[lin.path] = Solved(new, keep, record(target, seconds))
        if solver.errors is not False and hessian is not None:
            solved[lin.path].record["rel_error"] = float(hessian_rel_error(hessian, w, new))
        elif solver.errors and w.ndim == 2:
            checks[lin.path] = (unit.tap, w, new)
        if isinstance(stats, experts.ExpertStats):
            solved[lin.path].record.update(experts.report(stats))
    block_params = set_leaves(
        block_params,
        {lin.kernel_path: s.kernel for lin, s in zip(unit.linears, solved.values(), strict=True)},
    )
    return block_params, solved, checks


def solve_joint(
    solver: Solver,
    unit: JointMlp,
    block_params: Params,
    x: jax.Array,
    out_in: jax.Array,
    targets: Mapping[str, Target],
) -> tuple[Params, dict[str, Solved], Checks, dict[str, Any]]:
    """Jointly prunes one MLP from its inputs ``x`` and its output projection's dense inputs.

    Returns the block params with the MLP replaced, the solved kernels, the error checks of the
    next pass and the solver's report.
    """
    t0 = time.perf_counter()
    linears = unit.by_role
    kernels = {role: get_leaf(block_params, lin.kernel_path) for role, lin in linears.items()}
    biases = {
        role: get_leaf(block_params, f"{lin.name}/bias")
        for role, lin in linears.items()
        if "bias" in get_leaf(block_params, lin.name)
    }
    out_role = unit.spec.roles[-1][0]
    y = out_in @ kernels[out_role].astype(jnp.float32)
    if out_role in biases:
        y = y + biases[out_role].astype(jnp.float32)
    method = solver.method
    solution = method.joint(
        JointUnit(unit.spec.kind, kernels, biases, x, y, unit.spec.activation),
        {role: targets[lin.path] for role, lin in linears.items()},
        **method.joint_options_of(solver.options),
    )
    jax.block_until_ready(solution.kernels)
    seconds = time.perf_counter() - t0
    solver.log.timings["solve_seconds"] += seconds
    leaves: dict[str, jax.Array] = {}
    solved: dict[str, Solved] = {}
    checks: Checks = {}
    for role, lin in linears.items():
        # On a mesh the joint solver's results come back placed like the dense kernels.
        new, keep = place_like(
            (solution.kernels[role].astype(kernels[role].dtype), solution.masks[role]),
            kernels[role],
        )
        leaves[lin.kernel_path] = new
        solved[lin.path] = Solved(new, keep, record(targets[lin.path], seconds / len(linears)))
        checks[lin.path] = (lin.tap, kernels[role], new)
    for role, bias in solution.biases.items():
        leaves[f"{linears[role].name}/bias"] = place_like(
            bias.astype(biases[role].dtype), biases[role]
        )
    report = {
        "objective": [float(v) for v in solution.objective],
        "output_error": [float(v) for v in solution.output_error],
        "seconds": seconds,
    }
    return set_leaves(block_params, leaves), solved, checks, report


def prune_block(
    plan: BlockPlan,
    block_params: Params,
    hidden: list[jax.Array],
    solver: Solver,
    targets: Mapping[str, Target],
    runner: BlockRunner,
) -> BlockResult:
    """Prunes the targeted linears of one block stage by stage; returns it and its outputs.

    Each stage captures the block's inputs (statistics of its tap groups, raw inputs of a joint
    MLP) with the earlier stages already pruned and solves its units; relative output errors come
    from the Hessians where the method holds them, or are measured on the next pass (see
    :class:`Solver`).
    """
    solved: dict[str, Solved] = {}
    joint: dict[str, dict[str, Any]] = {}
    pending: Checks = {}
    for stage in plan.stages:
        groups = [u for u in stage if isinstance(u, TapGroup)]
        mlps = [u for u in stage if isinstance(u, JointMlp)]
        collect = (mlps[0].spec.in_tap, mlps[0].spec.out_tap) if mlps else ()
        calib = runner.run(
            block_params,
            hidden,
            index=plan.index,
            statistic=solver.method.statistics,
            stat_taps=tuple(group.tap for group in groups),
            checks=pending,
            collect=collect,
        )
        _record_errors(solved, pending, calib.rel_errors)
        pending = {}
        for unit in stage:
            if isinstance(unit, JointMlp):
                block_params, done, checks, joint[unit.name] = solve_joint(
                    solver, unit, block_params, *(calib.collected[tap] for tap in collect), targets
                )
                solved.update(done)
                if solver.errors is not False:
                    pending.update(checks)
                continue
            block_params, done, checks = solve_tap_group(
                solver, unit, block_params, calib.stats[unit.tap], targets
            )
            solved.update(done)
            pending.update(checks)
    final = runner.run(block_params, hidden, index=plan.index, checks=pending, with_output=True)
    _record_errors(solved, pending, final.rel_errors)
    return BlockResult(block_params, final.hidden, solved, joint)


def _record_errors(solved: dict[str, Solved], pending: Checks, errors: dict[str, float]) -> None:
    for path in pending:
        solved[path].record["rel_error"] = errors[path]
