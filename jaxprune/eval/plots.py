"""Pictures of reports: per-block sparsity and reconstruction error of a prune, loss and held-out
perplexity of a recovery run. matplotlib is imported only here, only when a plot is drawn.

:func:`plot_report` takes a report dict, a ``report.json`` or a checkpoint directory holding one
(a ``jaxprune prune`` or ``jaxprune recover`` output) and writes one PNG with a panel per thing
the report holds: per-block sparsity and error (one-shot prune), kept heads and MLP channels per
block (structured prune), loss and perplexity (recovery). A panel whose data the report lacks
(Wanda measures no reconstruction error by default) says so instead of staying blank.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from jaxprune.core.optional import require

_BLOCK = re.compile(r"layers/(\d+)/")


def read_report(source: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """A report dict from a dict, a JSON file or a directory holding ``report.json``.

    Raises:
      ValueError: nothing readable there.
    """
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise ValueError(
            f"{os.fspath(source)!r} is neither a report JSON file nor a directory with report.json "
            "(a `jaxprune prune --out` or `jaxprune recover --out` directory)"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read a JSON report from {path}: {err}") from None


def block_summary(report: dict[str, Any]) -> dict[int, dict[str, float]]:
    """Per block: size-unweighted mean ``sparsity`` and mean ``rel_error`` of its linears."""
    values: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path, entry in report.get("layers", {}).items():
        match = _BLOCK.match(path)
        if match is None:
            continue
        for key in ("sparsity", "rel_error"):
            if entry.get(key) is not None:
                values[int(match[1])][key].append(float(entry[key]))
    return {
        block: {key: sum(v) / len(v) for key, v in entry.items()}
        for block, entry in sorted(values.items())
    }


def block_widths(report: dict[str, Any]) -> dict[str, list[int]]:
    """A structured prune's query heads and MLP channels per block, kept (``heads``, ``mlp``) and,
    when the report has them, dense (``heads_before``, ``mlp_before``); ``{}`` for other reports.
    """
    out: dict[str, list[int]] = {}
    for suffix, key in (("", "widths"), ("_before", "widths_before")):
        rows = report.get(key)
        if rows:
            out[f"heads{suffix}"] = [int(r[0]) for r in rows]
            out[f"mlp{suffix}"] = [int(r[2]) for r in rows]
    return out if "heads" in out else {}


def _recovery(report: dict[str, Any]) -> dict[str, Any] | None:
    if "loss" in report:
        return report
    return report.get("recovery")


def require_matplotlib() -> None:
    """Raise a clear error when matplotlib, which draws the report, is missing."""
    require(
        "matplotlib",
        "plots need the `matplotlib` package: pip install matplotlib "
        "(or pip install 'jaxprune[plots]')",
    )


def plot_report(
    source: str | os.PathLike | dict[str, Any], out: str | os.PathLike | None = None
) -> Path:
    """Draws the report's panels (:func:`report_figure`) into one PNG.

    Args:
      source: a report dict, a JSON file, or a directory with ``report.json``.
      out: the PNG path; default ``report.png`` beside the JSON (required for a dict).

    Returns:
      The PNG's path.

    Raises:
      ValueError: the report holds no per-layer prune records, structured widths or recovery
        history.
    """
    report = read_report(source)
    if out is None:
        if isinstance(source, dict):
            raise ValueError("give out= (a PNG path) when plotting a report dict")
        base = Path(source)
        out = (base if base.is_dir() else base.parent) / "report.png"
    fig = report_figure(report)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def report_figure(report: dict[str, Any]):
    """A matplotlib ``Figure`` with two panels per thing the report holds (see the module).

    Raises:
      ValueError: the report holds none of them.
    """
    blocks, widths, recovery = block_summary(report), block_widths(report), _recovery(report)
    if not blocks and not widths and not recovery:
        raise ValueError(
            "the report has neither per-layer prune records, nor per-block widths of a "
            "structured prune, nor a recovery history"
        )
    require_matplotlib()
    from matplotlib.figure import Figure

    panels = 2 * sum(map(bool, (blocks, widths, recovery)))
    fig = Figure(figsize=(4.5 * panels, 3.6))
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    if blocks:
        _prune_panels(axes[:2], blocks, report)
        axes = axes[2:]
    if widths:
        _width_panels(axes[:2], widths, report)
        axes = axes[2:]
    if recovery:
        _recovery_panels(axes, recovery)
    fig.tight_layout()
    return fig


def _prune_panels(axes, blocks: dict[int, dict[str, float]], report: dict[str, Any]) -> None:
    index = list(blocks)
    title = f"{report.get('method', '')} {report.get('target', '')}".strip()
    axes[0].bar(index, [blocks[b].get("sparsity", 0.0) for b in index], color="tab:blue")
    axes[0].set(xlabel="block", ylabel="sparsity", title=f"per-block sparsity {title}", ylim=(0, 1))
    errors = [blocks[b].get("rel_error", float("nan")) for b in index]
    axes[1].set(xlabel="block", ylabel="‖WX − ŴX‖² / ‖WX‖²", title="reconstruction error")
    if all(math.isnan(e) for e in errors):
        _missing(
            axes[1],
            f"not in this report: {report.get('method', 'this method')} has no Hessian to\n"
            "measure errors with; jp.prune(..., errors=True)\nmeasures them on the next pass",
        )
    else:
        axes[1].plot(index, errors, marker="o", color="tab:red")
        if all(e > 0 for e in errors if not math.isnan(e)):
            axes[1].set_yscale("log")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)


def _missing(ax, text: str) -> None:
    """Says on an empty panel what is missing and why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8)


def _width_panels(axes, widths: dict[str, list[int]], report: dict[str, Any]) -> None:
    index = list(range(len(widths["heads"])))
    title = f"{report.get('method', '')} {report.get('sparsity', '')}".strip()
    removed = report.get("removed_fraction")
    if removed is not None:
        title += f", {removed:.0%} removed"
    panels = (("heads", "attention heads"), ("mlp", "MLP channels"))
    for ax, (key, label) in zip(axes, panels, strict=True):
        before = widths.get(f"{key}_before")
        if before is not None:
            ax.bar(index, before, color="none", edgecolor="tab:gray", label="dense")
        ax.bar(index, widths[key], color="tab:blue", label="kept")
        ax.set(xlabel="block", ylabel=label, title=f"{label} per block ({title})")
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)


def _recovery_panels(axes, recovery: dict[str, Any]) -> None:
    steps, losses = zip(*recovery["loss"], strict=True) if recovery["loss"] else ((), ())
    axes[0].plot(steps, losses, color="tab:green", linewidth=1)
    axes[0].set(xlabel="step", ylabel="training loss", title=f"recovery ({recovery['method']})")
    points = [(s, p) for s, p in recovery.get("eval", []) if p is not None]
    if points:
        axes[1].plot(*zip(*points, strict=True), marker="o", color="tab:purple")
    else:
        _missing(axes[1], "not in this report: the run had no held-out evaluation")
    axes[1].set(xlabel="step", ylabel="held-out perplexity", title="held-out perplexity")


__all__ = ["block_summary", "block_widths", "plot_report", "read_report", "report_figure"]
