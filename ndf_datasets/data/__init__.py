"""Datasets: raw sources -> records -> verified WebDataset shards (conversion, stores, ranks).

This package is the data room's door. It uses the codec only through
:mod:`ndf_datasets.codec`'s public names and imports nothing from the integrations; the
loader adapters (:mod:`ndf_datasets.integrations`) use it for shards.

* :mod:`~ndf_datasets.data.sources`: what can be converted (MNIST IDX, CIFAR-10 binary and
  python versions, ImageFolder trees, file lists); add a new dataset source here.
* :mod:`~ndf_datasets.data.shards`: byte-reproducible tar shards of ``.ndf`` samples, and
  :mod:`~ndf_datasets.data.tarcheck`, the stream that makes shard damage loud.
* :mod:`~ndf_datasets.data.conversion`: ``convert(SRC, OUT)``, resumable and torchrun-aware,
  writing through an output store (``_store``) with distributed ranks (``_dist``).
* :mod:`~ndf_datasets.data.access`: :class:`NDFShardDataset`, random access into what it
  wrote (one range read per record, through the shard indexes of :mod:`~ndf_datasets.data.shardindex`).
"""

from .access import NDFShardDataset, RangeCache
from .conversion import ConvertResult, ConvertSettings, convert
from .job import JOB_FILE, MANIFEST
from .shards import Sample, iter_shard, parse_shard, shard_bytes, write_shard
from .sources import Source, SourceError, Split, open_source
from .tarcheck import VerifiedTarStream

__all__ = [
    "convert",
    "NDFShardDataset",
    "RangeCache",
    "ConvertResult",
    "ConvertSettings",
    "MANIFEST",
    "JOB_FILE",
    "open_source",
    "Source",
    "Split",
    "SourceError",
    "Sample",
    "shard_bytes",
    "write_shard",
    "parse_shard",
    "iter_shard",
    "VerifiedTarStream",
]
