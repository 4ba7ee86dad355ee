"""WebDataset shards of ``.ndf`` images: writing, per-sample decoding and batched GPU decoding.

Shard layout (what :func:`write_shards` writes)::

    <dir>/shard-000000.tar            # tar members, grouped by key:
        000000.ndf                    #   the image: a standalone field or a record (bytes)
        000000.cls                    #   optional int label, ASCII ("7")
        000000.json                   #   optional metadata, UTF-8 JSON
        000001.ndf ...
    <dir>/shard-000001.tar
    <dir>/<16 hex digits>.ndfbase     # the dataset's shared base when samples are records,
                                      # named by content hash (ndf.base_filename(base.hash))

``<dir>`` is a local directory or any fsspec URL prefix (``s3://bucket/train``; see
:mod:`ndf_datasets.integrations.s3`). The base sits next to the shards and is found by the
hash every record carries, so shards can be moved as long as the base moves with them.

Reading, per sample (the decoder is an ordinary WebDataset handler, ``f(key, data)``)::

    import webdataset as wds
    from ndf_datasets.integrations.webdataset import ndf_decoder, ndf_samples

    ds = (wds.WebDataset("data/shard-{000000..000099}.tar", shardshuffle=100)
          .decode(ndf_decoder(size=64), "pil")        # .ndf -> 3x64x64 float tensor
          .to_tuple("ndf", "cls"))

A handler sees only one member's bytes, never the shard it came from, so with ``.decode``
records find their base through ``base=`` (a :class:`~ndf_datasets.SharedBase` or its
path/URL) or ``base_locations=[dirs]``. Wrapping the same handler with :func:`ndf_samples`
and using it as a map stage needs neither: it sees each sample's ``__url__`` and also looks
for the base next to the shard::

    ds = wds.WebDataset(urls, shardshuffle=100).map(ndf_samples(ndf_decoder(size=64)))

Batched, for GPU rendering: read cheaply in the DataLoader workers, render each batch in
one forward pass where the GPU is (the main process)::

    ds = (wds.WebDataset(urls, shardshuffle=100)
          .decode(ndf_read(base_locations=["data"]))  # .ndf -> DecodedField (CPU, cheap)
          .to_tuple("ndf", "cls").batched(256))
    loader = wds.WebLoader(ds, batch_size=None, num_workers=8).map(ndf_batch_decode(64, "cuda"))

Errors follow WebDataset's policy: a stage's ``handler=`` decides (``wds.reraise_exception``
by default; ``wds.warn_and_continue`` or :class:`SkipCounter` skip the sample). With
``.map(ndf_samples(...))`` a bad sample raises :class:`NDFDecodeError`, which names the
shard URL, the sample key and the member, ``from`` the underlying :class:`~ndf_datasets.NDFError`.
With ``.decode(ndf_decoder(...))`` WebDataset itself wraps the error in its
``DecodingError`` (attributes ``url``, ``key``, ``k``; ``__cause__`` is the NDFError). A
missing or wrong shared base raises :class:`~ndf_datasets.NDFBaseError`: it is a
configuration error, and :class:`SkipCounter` refuses to skip it.

No code is executed on read. WebDataset's ``.decode()`` appends its default post-handlers,
which unpickle ``.pyd`` / ``.pickle`` / ``.pkl`` members and ``torch.load`` ``.pth`` members
(with ``weights_only=False`` unless ``WDS_PYTORCH_WEIGHTS_ONLY=1``): a shard from a stranger
could run code through them. :func:`ndf_decoder` and :func:`ndf_read` therefore also claim
those members (:data:`CODE_EXTENSIONS`) and hand back their raw bytes, so a ``.decode()``
stage that includes an NDF handler never unpickles anything (``allow_code=True`` restores
WebDataset's behaviour for trusted data). ``.map(ndf_samples(...))`` touches only ``.ndf``
members and leaves every other member as bytes.

Decoders are small picklable objects (DataLoader workers get copies). Render on the CPU
in workers; use the batched path for CUDA (CUDA does not work in forked workers).
Importing this module registers fsspec handlers for the ``s3://``-like schemes WebDataset
lacks (:func:`ndf_datasets.integrations.s3.register_gopen_schemes`).

The adapter's modules, by role: :mod:`.handlers` (per-sample handlers and the sample map),
:mod:`.batches` (batched rendering), :mod:`.pipeline` (verified shards, the exactly-once
epoch across ranks and workers), :mod:`.resumable` (the epoch's state: resuming mid-epoch,
on the same or another number of ranks), :mod:`.writing` (writing shards), :mod:`.bases` (finding
a record's base) and :mod:`.errors`; every name is importable from this package.
"""

from __future__ import annotations

from ...codec import Size  # noqa: F401 (the handlers' output-size type, defined here before the split)
from ..s3 import register_gopen_schemes
from .bases import shard_dir
from .batches import NDFBatchRender, ndf_batch_decode
from .errors import NDFDecodeError, SkipCounter
from .handlers import CODE_EXTENSIONS, NDFHandler, NDFSampleMap, ndf_decoder, ndf_read, ndf_samples
from .pipeline import EpochDataset, NDFWebDataset, epoch_dataset
from .writing import ShardSet, write_shards

__all__ = [
    "CODE_EXTENSIONS",
    "EpochDataset",
    "NDFBatchRender",
    "NDFDecodeError",
    "NDFHandler",
    "NDFSampleMap",
    "NDFWebDataset",
    "ShardSet",
    "SkipCounter",
    "ndf_batch_decode",
    "ndf_decoder",
    "ndf_read",
    "ndf_samples",
    "epoch_dataset",
    "shard_dir",
    "write_shards",
]


register_gopen_schemes()
