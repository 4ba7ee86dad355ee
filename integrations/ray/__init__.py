"""Ray Data adapter: encode with actors that load the base once, write verified shards, convert on a cluster.

Needs ``ray[data]`` (``pip install 'ndf-datasets[ray]'``; tested with 2.60).

* :class:`NDFEncoder`: ``ds.map_batches(NDFEncoder, fn_constructor_kwargs={"base": "cifar10"})``
  turns an ``image`` column into records (``ndf``, ``psnr``, ``nbytes`` columns), on CPU or
  ``num_gpus=1`` actors, in actor pools (``compute=ActorPoolStrategy(...)``).
* :func:`convert_ray` (``ndf convert SRC OUT --engine ray``, ``ndf.convert(..., engine="ray")``):
  the whole conversion as a Ray Data job (:class:`NDFShardEncoder` over the units,
  :class:`NDFShardSink` writing them and the manifest). A local Ray instance by default,
  ``address=`` (``--ray-address``) for a cluster. Byte-for-byte the files of the
  single-process conversion; a failed task is retried without duplicates; after a crash the
  same command resumes.

Modules: :mod:`.encoders` (the ``map_batches`` classes), :mod:`.engine` (the datasink, the job).
"""

from __future__ import annotations

from .encoders import NDFEncoder, NDFShardEncoder
from .engine import NDFShardSink, convert_ray, init_local

__all__ = ["NDFEncoder", "NDFShardEncoder", "NDFShardSink", "convert_ray", "init_local"]
