"""Data-parallel training across processes and machines with ``torch.distributed``.

recforge does not have its own distributed engine: processes are started by PyTorch's
elastic launcher (``torchrun``, also what ``recforge train --nproc N`` runs), gradients are
averaged by :class:`torch.nn.parallel.DistributedDataParallel` (gloo on CPUs, NCCL on GPUs),
and the launcher's rendezvous joins machines (``--nnodes``, ``--rdzv-endpoint``).

What recforge adds is the glue a recommender needs:

* :func:`init_from_environment` reads what ``torchrun`` exported (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ...), joins the process group with a timeout (a dead peer fails the job
  instead of hanging it), picks the backend and the device, and gives each process its
  share of the machine's cores;
* the :class:`~recforge.training.trainer.Trainer` wraps the model in DDP and gives each
  rank a disjoint shard of every epoch. With data sharded by user (the ``--nproc`` default
  for every model but ``lightgcn``) every rank validates its own users and the figures are
  all-reduced; otherwise every rank validates every ``world``-th validation user against
  the whole data and the figures are all-reduced the same way. Either way every rank
  makes the same early-stopping decision, and only rank 0 writes checkpoints, logs and the
  saved model;
* :func:`launch` starts ``torchrun`` for ``--nproc``.
"""

from __future__ import annotations

import datetime
import gc
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from recforge.errors import ConfigError

__all__ = ["DistributedContext", "init_from_environment", "shutdown", "launch",
           "broadcast_float", "all_reduce_sum", "collective_device", "DEFAULT_TIMEOUT_S"]

#: Seconds a collective may wait for a peer before the job fails (``RECFORGE_DIST_TIMEOUT``).
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a distributed job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size


def _env_int(name: str, default: int | None = None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def init_from_environment(device: str = "auto",
                          timeout_s: float | None = None) -> DistributedContext | None:
    """Join the process group ``torchrun`` set up; ``None`` when not launched by it.

    ``device``: ``"auto"`` uses the GPU ``LOCAL_RANK`` with NCCL when CUDA is present, else
    the CPU with gloo; ``"cpu"`` forces gloo. ``timeout_s`` (default ``RECFORGE_DIST_TIMEOUT``
    or 600) bounds every collective, so a rank that dies or hangs fails the job instead of
    blocking the others forever.
    """
    world = _env_int("WORLD_SIZE")
    if world is None or world <= 1:
        return None
    rank = _env_int("RANK", 0) or 0
    local_rank = _env_int("LOCAL_RANK", 0) or 0
    local_world = _env_int("LOCAL_WORLD_SIZE", world) or world
    if timeout_s is None:
        raw = os.environ.get("RECFORGE_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
        try:
            timeout_s = float(raw)
        except ValueError:
            raise ConfigError(f"environment variable RECFORGE_DIST_TIMEOUT={raw!r} is not a "
                              "number of seconds") from None
    use_cuda = device != "cpu" and torch.cuda.is_available() and (
        device == "auto" or str(device).startswith("cuda"))
    if use_cuda:
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
        # Processes on one machine share its cores: oversubscribed OpenMP threads spin
        # against each other and slow every rank down.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        # torchrun sets OMP_NUM_THREADS=1 when it is unset; `launch` (--nproc) exports
        # RECFORGE_SET_THREADS=1 unless set, so cores / ranks applies there too, over any
        # OMP_NUM_THREADS. RECFORGE_SET_THREADS=0 keeps OMP_NUM_THREADS.
        force = os.environ.get("RECFORGE_SET_THREADS", "").strip().lower() not in (
            "", "0", "false", "no")
        if "OMP_NUM_THREADS" not in os.environ or force:
            torch.set_num_threads(max(1, cores // max(1, local_world)))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend,
                                timeout=datetime.timedelta(seconds=float(timeout_s)))
    return DistributedContext(rank=rank, world_size=world, local_rank=local_rank,
                              local_world_size=local_world, backend=backend, device=dev)


def shutdown(*, wait_for_others: bool = False) -> None:
    """Leave the process group (a no-op when not in one).

    ``wait_for_others=True``, at the end of a job that succeeded, first waits at a barrier
    until every rank has got there, so that all leave together. A rank that left and exited
    while another still worked (rank 0 writing the model) sometimes aborted in the
    teardown of its communication threads at interpreter exit ("terminate called without
    an active exception": 4 of about 35 two-process runs of a short ``mlp`` job here, none
    in 30 with the barrier), and the launcher then killed the rank still writing. Not after
    an error: the other ranks may be inside a collective this one will never join (the
    launcher stops them instead).

    Before leaving, objects in reference cycles (a DDP wrapper and its reducer, pending
    work of a collective) are collected, so that the process group they hold is destroyed
    now, with its communication threads, and not in the interpreter's finalisation, where a
    gloo thread that still holds tensors aborts the process (seen once in a fresh-clone
    test run even with the barrier; pytorch/pytorch#179291 describes the mechanism)."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_others and dist.get_world_size() > 1:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def collective_device(device: torch.device) -> torch.device:
    """Where tensors for a collective must live: the GPU under NCCL, else the CPU (gloo)."""
    if active() and dist.get_backend() == "nccl":
        return device
    return torch.device("cpu")


def broadcast_float(value: float, src: int = 0, device: torch.device | None = None) -> float:
    """Rank ``src``'s ``value`` on every rank."""
    t = torch.tensor([value], dtype=torch.float64, device=device or "cpu")
    dist.broadcast(t, src=src)
    return float(t.item())


def all_reduce_sum(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """Element-wise sum of ``values`` over all ranks."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device or "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(x) for x in t.tolist()]


def launch(argv: Sequence[str], nproc: int, *, torchrun_args: Sequence[str] = ()) -> int:
    """Run ``recforge ARGV`` in ``nproc`` processes on this machine under ``torchrun``.

    Equivalent to ``torchrun --standalone --nproc-per-node NPROC -m recforge ARGV``; returns
    the launcher's exit status (non-zero when any rank failed: the launcher then stops the
    others). For several machines, call ``torchrun`` yourself with its rendezvous flags.
    """
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", *torchrun_args, "-m", "recforge", *argv]
    env = dict(os.environ)
    env.setdefault("RECFORGE_SET_THREADS", "1")
    return subprocess.call(cmd, env=env)
