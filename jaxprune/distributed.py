"""Multi-process runs: one process per host (or per accelerator), all running the same program.

Every process calls :func:`initialize` before anything else touches JAX; afterwards
``jax.devices()`` lists the devices of all processes, :func:`jaxprune.sharding.make_mesh` spans
them, and :func:`jaxprune.prune` / :func:`jaxprune.prune_pretrained` with that mesh prune across
hosts::

    import jaxprune as jp
    from jaxprune import distributed, sharding

    distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=0)   # on each host
    mesh = sharding.make_mesh(sharding.parse_mesh("2x4"))
    result = jp.prune_pretrained("/models/llama", jp.Recipe(method="sparsegpt"), mesh=mesh)
    result.save("/shared/pruned")          # every process writes its shards; one the JSON parts

On a TPU VM, under SLURM, Open MPI or Kubernetes, or with ``JAX_COORDINATOR_ADDRESS`` (and the
process count and id) in the environment, ``distributed.initialize()`` without arguments lets JAX
read them. On CPUs the processes exchange data through Gloo (``jax_cpu_collectives_implementation``,
JAX's default since 0.5); tests use this to run several processes on one machine.
"""

from __future__ import annotations

import jax


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_seconds: int = 300,
) -> None:
    """Joins this process to a multi-process run (``jax.distributed.initialize``).

    Args:
      coordinator: ``HOST:PORT`` of process 0's coordinator service; ``None`` with the other two
        ``None`` reads the cluster environment (TPU VM, SLURM, Open MPI, Kubernetes,
        ``JAX_COORDINATOR_ADDRESS``) as JAX does.
      num_processes: how many processes take part.
      process_id: this process's index, ``0 … num_processes - 1``.
      timeout_seconds: how long to wait for the other processes to join.

    Raises:
      ValueError: only some of the three arguments given, a process id out of range, or JAX
        already started (initialize must come before any JAX computation or device query).
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError(
            "give the coordinator HOST:PORT, the number of processes and this process's id "
            "together, or none of them to read the cluster's environment"
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is not in 0..{num_processes - 1}")
    if coordinator is not None and (":" not in coordinator or not coordinator.rsplit(":")[-1]):
        raise ValueError(f"coordinator {coordinator!r} is not HOST:PORT, e.g. 10.0.0.1:1234")
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise ValueError(
            "JAX has already started in this process; call jaxprune.distributed.initialize "
            "before anything touches JAX (devices, arrays, compiled functions)"
        )
    jax.distributed.initialize(
        coordinator, num_processes, process_id, initialization_timeout=timeout_seconds
    )


def is_primary() -> bool:
    """Whether this process writes what is written once (JSON documents, reports): process 0."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process reaches the point called ``name`` (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


__all__ = ["initialize", "is_primary", "sync"]
