"""The few collective steps a conversion needs when launched with ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) starts one process per rank with
``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in the environment. A
conversion then uses a CPU-only ``gloo`` process group for three things: rank 0 tells the
others that the output folder is ready and which base to use, every rank reports whether
its shards succeeded, and rank 0 writes the manifest only when all did. No objects are
pickled: only small integer tensors are exchanged.
"""

from __future__ import annotations

import datetime
import os

import torch

__all__ = ["Group", "env_world"]


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` without it).

    Raises:
        ValueError: malformed or inconsistent variables.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world, local


class Group:
    """A gloo process group initialised from the environment, or a stand-in for one process.

    Args:
        rank, world: this process's rank and the number of processes.
        timeout_s: how long a collective may wait (e.g. for rank 0 fitting the base).
    """

    def __init__(self, rank: int, world: int, timeout_s: float) -> None:
        self.rank, self.world = rank, world
        self._owned = False
        self._group = None
        if world > 1:
            import torch.distributed as dist

            timeout = datetime.timedelta(seconds=float(timeout_s))
            if not dist.is_initialized():
                dist.init_process_group("gloo", init_method="env://", timeout=timeout)
                self._owned = True
            elif dist.get_backend() != "gloo":  # e.g. the caller's NCCL group: CPU tensors need gloo
                self._group = dist.new_group(backend="gloo", timeout=timeout)
            if dist.get_world_size() != world or dist.get_rank() != rank:
                raise ValueError("the initialised process group does not match RANK / WORLD_SIZE")

    def all_ok(self, ok: bool) -> bool:
        """True when every rank passes ``ok=True`` (a collective: every rank must call it)."""
        if self.world == 1:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=self._group)
        return bool(flag.item())

    def broadcast_bytes(self, data: bytes, size: int) -> bytes:
        """Rank 0's ``data`` (exactly ``size`` bytes) on every rank."""
        if self.world == 1:
            return data
        import torch.distributed as dist

        buf = torch.zeros(size, dtype=torch.uint8)
        if self.rank == 0:
            buf[:] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        dist.broadcast(buf, src=0, group=self._group)
        return bytes(buf.tolist())

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False
