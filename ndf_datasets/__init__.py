"""ndf-datasets: images stored as neural fields (``.ndf``), decoded lazily at any resolution.

Quick start::

    import ndf_datasets as ndf
    blob = ndf.encode(image, psnr=35.0)          # PIL / uint8 ndarray / float tensor
    x = ndf.decode(blob, size=(64, 96))           # float32 C x H x W in [0, 1], any size
    ndf.inspect(blob)                             # header facts: bytes, PSNR, architecture ...

    base = ndf.fit_base(train_images)             # one shared network for a dataset
    rec = ndf.encode(image, base=base, psnr=34)   # a small per-image record
    x = ndf.decode(rec, base=base, size=32)

    ndf.convert("raw/cifar-10-batches-py", "out/cifar10")   # a dataset -> base + WebDataset shards
"""

from . import api
from ._version import __version__
from .api import *  # noqa: F403 (the front door's names, listed once in api.__all__)

__all__ = [*api.__all__, "__version__"]

from ._hooks import alias_modules as _alias_modules  # noqa: E402
from ._hooks import when_imported as _when_imported  # noqa: E402

#: Where the modules of the flat layout went (old import path -> module now imported under it).
_MOVED = {
    "ndf_datasets._dist": "ndf_datasets.data._dist",
    "ndf_datasets._store": "ndf_datasets.data._store",
    "ndf_datasets.convert": "ndf_datasets.data.conversion",
    "ndf_datasets.shards": "ndf_datasets.data.shards",
    "ndf_datasets.sources": "ndf_datasets.data.sources",
    "ndf_datasets.tarcheck": "ndf_datasets.data.tarcheck",
    "ndf_datasets.amortised": "ndf_datasets.codec.amortised",
    "ndf_datasets.coding": "ndf_datasets.codec.coding",
    "ndf_datasets.decode": "ndf_datasets.codec.decoding",
    "ndf_datasets.errors": "ndf_datasets.codec.errors",
    "ndf_datasets.fields": "ndf_datasets.codec.fields",
    "ndf_datasets.fitting": "ndf_datasets.codec.fitting",
    "ndf_datasets.format": "ndf_datasets.codec.format",
    "ndf_datasets.images": "ndf_datasets.codec.images",
    "ndf_datasets.integrations.hf_builder": "ndf_datasets.integrations.hf.builder",
    "ndf_datasets.io": "ndf_datasets.codec.bases",
    "ndf_datasets.shared": "ndf_datasets.codec.shared",
}
_alias_modules(_MOVED)

# HF datasets: register the NDFImage feature and the ndf_* dataset names when (and only if)
# `datasets` itself is imported. The core names the adapter; it never imports it eagerly.
_when_imported("datasets", "ndf_datasets.integrations.hf:register")
