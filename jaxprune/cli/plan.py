"""``jaxprune plan``: the per-device memory of a prune, from a ``config.json`` alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jaxprune.cli._args import DTYPES, UsageError, check_positive, emit

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def add_parser(sub: Any, model_help: str, sources: str) -> None:
    from jaxprune.footprint import PLANNED_METHODS

    pl = sub.add_parser(
        "plan",
        help="per-device peak memory of a prune and whether it fits, from a config.json alone",
        description="Print, per device of the mesh, the peak bytes of the params, activations, "
        "statistics and solver work of a prune, and whether it fits --device-memory. Reads only "
        "the Hugging Face config.json, so a 70B or 405B run can be planned before downloading.",
    )
    pl.add_argument("--model", required=True, help="config.json, or a directory holding one")
    pl.add_argument("--method", required=True, choices=PLANNED_METHODS, help="pruning method")
    pl.add_argument("--mesh", default="1x1", metavar="DATAxMODEL", help="mesh shape (1x1)")
    pl.add_argument("--nsamples", type=int, default=128, help="calibration windows (128)")
    pl.add_argument("--seqlen", type=int, default=2048, help="tokens per window (2048)")
    pl.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (8)")
    pl.add_argument("--dtype", choices=DTYPES, default="float32", help="params dtype (float32)")
    pl.add_argument("--offload", action="store_true", help="params on the host, one block moved")
    pl.add_argument("--allocation", choices=["uniform", "owl"], default="uniform")
    pl.add_argument("--device-memory", metavar="SIZE", help="memory per device, e.g. 80GB")
    pl.add_argument("--json", action="store_true", help="print the plan as one JSON line")
    pl.set_defaults(func=run)


def _config(path: str) -> dict[str, Any]:
    file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise UsageError(f"--model {path}: no config.json there; give the file or its directory")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"--model {file}: not JSON ({err})") from None


def run(args: argparse.Namespace) -> None:
    from jaxprune import footprint, sharding

    check_positive(nsamples=args.nsamples, seqlen=args.seqlen, batch_size=args.batch_size)
    try:
        mesh = sharding.parse_mesh(args.mesh)
        device = None if args.device_memory is None else footprint.parse_bytes(args.device_memory)
        shapes = footprint.Shapes.from_hf_config(_config(args.model))
        job = footprint.Job(
            args.method,
            mesh=mesh,
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            dtype_bytes=_BYTES[args.dtype],
            batch_size=args.batch_size,
            offload=args.offload,
            owl=args.allocation == "owl",
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = footprint.plan(shapes, job)
    report = {
        "model": args.model,
        "method": args.method,
        "mesh": list(mesh),
        "params": shapes.params,
        "per_device_bytes": result.categories,
        "phases_bytes": result.phases,
        "peak_bytes": result.peak_bytes,
        "device_bytes": device,
        "fits": None if device is None else result.fits(device),
    }
    emit(args, report, _summary(report, args))


def _summary(report: dict[str, Any], args: argparse.Namespace) -> str:
    gib = 2**30
    lines = [
        f"{args.model}: {report['params'] / 1e9:.2f} B params, {args.method} on a {args.mesh} "
        f"mesh, {args.nsamples}×{args.seqlen} tokens, {args.dtype}"
        + (", offload" if args.offload else ""),
        "per device (GiB):",
    ]
    for name, value in report["per_device_bytes"].items():
        lines.append(f"  {name:<12} {value / gib:10.2f}")
    for name, value in report["phases_bytes"].items():
        lines.append(f"  phase {name:<10} {value / gib:8.2f}")
    lines.append(f"  peak         {report['peak_bytes'] / gib:10.2f}")
    if report["device_bytes"] is not None:
        verdict = "fits" if report["fits"] else "does NOT fit"
        lines.append(f"{verdict} in {report['device_bytes'] / gib:.2f} GiB per device")
    return "\n".join(lines)
