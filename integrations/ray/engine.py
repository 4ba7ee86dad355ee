"""``ndf convert --engine ray``: a conversion's units as a Ray Data pipeline, and the datasink that writes them.

The driver prepares the job (:func:`~ndf_datasets.data.engine.prepare_job`: the job file, the
base, resume checks), then runs::

    ray.data.from_items([{"ordinal": u} for each unit])
        .map_batches(NDFShardEncoder, fn_constructor_kwargs={"spec": ...}, batch_size=1,
                     compute=ActorPoolStrategy(...), num_cpus=1, num_gpus=...)
        .write_datasink(NDFShardSink(job))

A unit is one shard encoded by exactly the calls the single-process conversion makes, so the
bytes are the same; :class:`NDFShardSink` verifies and writes each unit's files atomically and,
on the driver once every unit is in, the manifest and the dataset card. Ray retries a task
whose worker died (actors are restarted); a retried unit writes the same bytes under the same
names, so nothing is duplicated, and after a crash of the whole job the same command resumes:
complete units are verified in the actors and kept.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

from ...data.conversion import ConvertResult
from ...data.engine import Job, prepare_job, unpack_files, write_unit

__all__ = ["NDFShardSink", "convert_ray", "init_local"]

try:
    import ray
    import ray.data
    from ray.data import Datasink
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("ndf_datasets.integrations.ray needs Ray Data: pip install 'ndf-datasets[ray]'") from exc

from .encoders import NDFShardEncoder


class NDFShardSink(Datasink):
    """Writes the units :class:`~.encoders.NDFShardEncoder` made; the manifest and card when all are in.

    Args:
        job: the prepared job (kept on the driver; write tasks get only the output location).
    """

    def __init__(self, job: Job) -> None:
        self._job: Job | None = job
        self.location, self.options = job.store.location, job.store.options
        self.units = len(job.units)
        self.kept = self.encoded = 0
        self.manifest: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:  # write tasks need no source, base or job
        state = dict(self.__dict__)
        state["_job"] = None
        return state

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[tuple[int, bool, int]]:
        from ...data._store import Store

        store = Store(self.location, self.options)
        done = []
        for block in blocks:
            for row in block.to_pylist():
                if not row["kept"]:
                    write_unit(store, unpack_files(row["files"], f"unit {row['ordinal']}"))
                done.append((int(row["ordinal"]), bool(row["kept"]), int(row["images"])))
        return done

    def on_write_complete(self, write_result: Any) -> None:
        done: dict[int, tuple[bool, int]] = {}
        for part in write_result.write_returns:
            for ordinal, kept, images in part:
                done[ordinal] = (kept, images)
        missing = sorted(set(range(self.units)) - set(done))
        if missing:
            raise RuntimeError(f"units {missing[:10]} were never written; run the same command again to finish")
        self.kept = sum(k for k, _ in done.values())
        self.encoded = sum(n for _, n in done.values())
        if self._job is not None:
            self.manifest = self._job.finish()


def init_local(num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start a local Ray instance for a conversion: no dashboard, no usage reporting, the loopback address.

    Ray's servers listen on every interface of the machine whatever address is given; to keep
    them off the network run the job in a network namespace with only loopback (the tests do:
    ``unshare -n``) or behind a firewall.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
             configure_logging=False, log_to_driver=False, **kwargs)  # fmt: skip


def convert_ray(
    src: Any,
    out: str | os.PathLike,
    *,
    address: str | None = None,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    encoder: type = NDFShardEncoder,
    ray_init: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ConvertResult:
    """Convert a dataset on Ray Data; the same files, byte for byte, as :func:`~ndf_datasets.data.convert`.

    Example::

        convert_ray("raw/cifar-10-batches-py", "s3://bucket/c10", base="cifar10", address="auto",
                    concurrency=(2, 64), storage_options={...})

    Args:
        src, out: as :func:`~ndf_datasets.data.convert` (``OUT`` must be reachable from every
            worker: a shared file system or an object store URL).
        address: a running cluster (``"auto"``, ``"ray://head:10001"``); ``None`` starts a
            local instance with every core (:func:`init_local`) and stops it afterwards.
        concurrency: actors encoding units: a count, or ``(min, max)`` for an autoscaling
            pool (default: as many as the cluster's CPUs allow).
        num_cpus, num_gpus: resources of each actor (``num_gpus=1`` with ``device="cuda"``).
        encoder: the ``map_batches`` class (a subclass of :class:`~.encoders.NDFShardEncoder`).
        ray_init: more arguments for ``ray.init``.
        kwargs: :func:`~ndf_datasets.data.convert`'s settings (``layout``, ``psnr``,
            ``shard_size``, ``base``, ``storage_options``, ``force``, ``progress`` ...).

    Returns:
        A :class:`~ndf_datasets.data.ConvertResult` (``skipped``: units kept from an earlier run).
    """
    t0 = time.time()
    started = False
    if not ray.is_initialized():
        if address is None:
            init_local(**(ray_init or {}))
        else:
            ray.init(address=address, **(ray_init or {}))
        started = True
    try:
        job = prepare_job(src, out, **kwargs)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(kwargs.get("progress", True))
        size = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9)))
        pool = ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1]) if isinstance(size, tuple) else \
            ray.data.ActorPoolStrategy(size=min(size, max(1, len(job.units))))  # fmt: skip
        sink = NDFShardSink(job)
        t1 = time.time()
        if job.units:
            items = [{"ordinal": u.ordinal} for u in job.units]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(encoder, fn_constructor_kwargs={"spec": job.spec()}, batch_size=1, compute=pool,
                                num_cpus=num_cpus, num_gpus=num_gpus, batch_format="numpy")  # fmt: skip
            ds.write_datasink(sink)
        else:
            sink.manifest = job.finish()
        seconds = time.time() - t1
    finally:
        if started:
            ray.shutdown()
    return ConvertResult(out=job.store.location, base_hash=job.base.hash.hex(), counts=dict(job.counts),
                         encoded=sink.encoded, skipped=sink.kept, seconds=time.time() - t0,
                         images_per_s=sink.encoded / seconds if seconds > 0 and sink.encoded else 0.0,
                         manifest=sink.manifest)  # fmt: skip
