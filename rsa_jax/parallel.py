"""Data parallelism: one mesh axis over every visible device, batches split along it.

Parameters, optimizer state, EMA and keys are replicated; each batch is split on its leading
axis; XLA inserts the gradient all-reduce (the mean over the batch becomes a cross-device
reduction), so a sharded step computes the same numbers as the single-device step, up to the
order of floating-point summation.

    from rsa_jax import parallel
    mesh = parallel.make_mesh()                         # all devices, axis "data"
    state = parallel.replicate(state, mesh)
    step = parallel.make_sharded_train_step(train_step, mesh)
    for batch in batches:
        state, metrics = step(state, parallel.shard_batch(batch, mesh))

The global batch must be divisible by the number of devices. On several hosts call
:func:`initialize_distributed` first, before anything touches a device; every process then
runs the same program, and :func:`shard_batch` takes each process's *local* part of the
batch (``global batch / process_count`` rows) and assembles the global array.

To try it on one CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before jax
is imported) makes four CPU devices.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, **kwargs) -> None:
    """Starts multi-host JAX (a wrapper around ``jax.distributed.initialize``).

    Call once per process, first thing, before any other jax call. With no arguments jax
    auto-detects the cluster (SLURM, Open MPI, Cloud TPU, Kubernetes...); otherwise pass the
    coordinator ``"host:port"`` (process 0 listens there), the process count and this process's
    id. Afterwards ``jax.devices()`` lists the devices of every host, and :func:`make_mesh`
    spans all of them. Example (two hosts, run on each with its own id)::

        python -m experiments.sudoku_ood --coordinator 10.0.0.1:1234 --num-processes 2 --process-id $ID

    Idempotent: a second call in an initialized process does nothing.

    Not covered by the tests (needs several hosts).
    """
    if jax.distributed.is_initialized():
        return
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, **kwargs)


def make_mesh(devices: Sequence[jax.Device] | None = None, axis: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (default: all devices of all processes).

    The axis type is ``Auto`` (the compiler propagates shardings), not the ``Explicit`` default
    of ``jax.make_mesh``.
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Sharding that splits an array's leading axis over ``axis``."""
    return NamedSharding(mesh, P(axis))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, P())


def _leaf_batch_sharding(mesh: Mesh, axis: str, x) -> NamedSharding:
    """Batch sharding for arrays with a leading axis; replicated for scalars (e.g. a step count)."""
    return batch_sharding(mesh, axis) if np.ndim(x) >= 1 else replicated_sharding(mesh)


def shard_batch(batch: Any, mesh: Mesh, axis: str = DATA_AXIS) -> Any:
    """Places a pytree of arrays with a leading batch axis split over the mesh.

    Single process: ``batch`` is the global batch. Several processes: each passes its local
    rows, and the global array is assembled with ``jax.make_array_from_process_local_data``.
    Scalar leaves are replicated.

    Raises:
      ValueError: if a leading axis is not divisible by the number of devices on ``axis``
        (per process, the local devices).
    """
    local_n = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def put(x):
        sharding = _leaf_batch_sharding(mesh, axis, x)
        if np.ndim(x) >= 1:
            if np.shape(x)[0] % max(local_n, 1):
                raise ValueError(f"batch axis of size {np.shape(x)[0]} (leaf shape {np.shape(x)}) is not "
                                 f"divisible by the {local_n} devices of mesh axis {axis!r} in this process")
        if jax.process_count() > 1 and np.ndim(x) >= 1:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        return jax.device_put(x, sharding)

    return jax.tree.map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf of ``tree`` (params, optimizer state, EMA, keys) on all mesh devices."""
    return jax.device_put(tree, replicated_sharding(mesh))


def make_sharded_train_step(step: Callable, mesh: Mesh, *, axis: str = DATA_AXIS, donate: bool = False,
                            batch_argnum: int = 1) -> Callable:
    """Jits ``step(state, batch, ...) -> (state, metrics)`` for data parallelism on ``mesh``.

    Input shardings: every argument replicated except ``batch`` (positional ``batch_argnum``),
    split on its leading axis (scalar leaves replicated). Output shardings: replicated (new
    state and metrics). The shardings are fixed from the pytree structure of the first call.

    Args:
      step: the pure train step (e.g. from ``rsa_jax.train.make_train_step``).
      mesh: from :func:`make_mesh`.
      axis: the mesh axis the batch is split over.
      donate: donate the state buffers (argument 0) to the output.
      batch_argnum: position of the batch argument.

    Returns:
      A function with ``step``'s signature; place the inputs with :func:`replicate` /
      :func:`shard_batch` (otherwise jit moves them, which costs a transfer per call).
    """
    rep = replicated_sharding(mesh)
    compiled: dict = {}

    def sharded(*args):
        key = jax.tree.structure(args)
        if key not in compiled:
            in_shardings = tuple(
                jax.tree.map(lambda x: _leaf_batch_sharding(mesh, axis, x), a) if i == batch_argnum else rep
                for i, a in enumerate(args))
            compiled[key] = jax.jit(step, in_shardings=in_shardings, out_shardings=rep,
                                    donate_argnums=(0,) if donate else ())
        return compiled[key](*args)

    return sharded
