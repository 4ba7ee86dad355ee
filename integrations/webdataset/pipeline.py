"""Reading shards: :class:`NDFWebDataset` (damaged shards are errors, not short epochs) and :func:`epoch_dataset`.

:func:`epoch_dataset` is the epoch and rank logic: every sample exactly once across ranks and
DataLoader workers, in an order fixed by ``(seed, epoch)``, resumable mid-epoch (the state
and the reading are in :mod:`.resumable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import webdataset as wds
import webdataset.cache

from ...data.tarcheck import open_verified
from .resumable import EpochDataset

__all__ = ["EpochDataset", "NDFWebDataset", "epoch_dataset"]


class _VerifyingOpener:
    """Wraps WebDataset's shard-opening stage: every opened stream is a verified tar stream (gunzipped and
    verified to its trailer for a ``.tar.gz``; :func:`~ndf_datasets.data.tarcheck.open_verified`)."""

    def __init__(self, inner: Callable[[Iterable[Any]], Iterable[dict]]):
        self.inner = inner

    def __call__(self, urls: Iterable[Any]) -> Iterable[dict]:
        for sample in self.inner(urls):
            sample["stream"] = open_verified(sample["stream"], str(sample["url"]))
            yield sample


class NDFWebDataset(wds.WebDataset):
    """``webdataset.WebDataset`` that refuses corrupted and truncated shards instead of
    silently dropping their tail.

    Same arguments and fluid interface as ``wds.WebDataset``. WebDataset reads tar files with
    :mod:`tarfile`, which ends a shard quietly at a tar header whose checksum is wrong (after
    the first member) or at an end of file before the end-of-archive marker: every later
    sample is lost without an error; and it never checks a ``.tar.gz`` shard's gzip trailer.
    Here each shard stream goes through :class:`~ndf_datasets.data.tarcheck.VerifiedTarStream`
    (and, for gzip shards, :class:`~ndf_datasets.data.gzcheck.VerifiedGzipStream`, read to the
    end of the file), so all of it raises :class:`~ndf_datasets.NDFShardError` (shard URL,
    member, byte offset), handled by ``handler=`` like any other error: :class:`SkipCounter`
    skips the rest of the shard and counts it.

    Example::

        ds = (NDFWebDataset(urls, shardshuffle=100, handler=wds.reraise_exception)
              .map(ndf_samples(ndf_decoder(size=32)))
              .to_tuple("ndf", "cls"))

    Raises:
        RuntimeError: a WebDataset release whose pipeline has no shard-opening stage this
            class knows (supported: ``webdataset>=1.0,<1.1``).
    """

    def __init__(self, urls: Any, *args: Any, **kwargs: Any):
        super().__init__(urls, *args, **kwargs)
        for i, stage in enumerate(self.pipeline):
            if isinstance(stage, (webdataset.cache.StreamingOpen, webdataset.cache.FileCache)):
                self.pipeline[i] = _VerifyingOpener(stage)
                return
        raise RuntimeError(
            "no shard-opening stage in this WebDataset pipeline; NDFWebDataset needs webdataset>=1.0,<1.1"
        )


def epoch_dataset(
    urls: str | Sequence[str],
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: int = 0,
    handler: Callable[[BaseException], bool] = wds.reraise_exception,
    resume: Sequence[Any] | None = None,
) -> EpochDataset:
    """One epoch over ``urls`` in which every sample is read exactly once across all ranks
    and DataLoader workers, in an order fixed by ``(seed, epoch)``, resumable mid-epoch.

    The recipe, and why each step is needed:

    1. the shard list is expanded and permuted with ``Random(seed * 1000003 + epoch)``
       *before* it is split, so every rank computes the same permutation (WebDataset's own
       ``shardshuffle`` runs after the split and seeds from the clock unless told otherwise);
    2. it is split by rank (``RANK`` / ``WORLD_SIZE`` or an initialised
       ``torch.distributed`` group, as ``wds.split_by_node`` finds them) and then by
       DataLoader worker: disjoint parts that cover every shard once;
    3. samples are optionally shuffled inside each worker with a buffer of ``shuffle``
       samples and a seed derived from ``(seed, epoch)``, the rank and the worker;
    4. shards are read and verified as :class:`NDFWebDataset` reads them, so a damaged shard
       is an error (or, with ``handler=SkipCounter()``, a counted skip), never a silent short
       epoch.

    No resampling, no repetition: an epoch ends when every part is consumed. With ``R``
    ranks and ``W`` workers, ranks receive equal numbers of samples only when every shard
    holds as many samples and the shard count is a multiple of ``R * W``. Build a new one per
    epoch (``epoch=`` changes the order); DataLoader workers get it by pickling, as usual.

    The result has ``state_dict()`` / ``load_state_dict()`` (torchdata's ``StatefulDataLoader``
    saves and restores them in every worker): restored, it yields exactly the samples not yet
    seen, in the same order. ``resume=`` takes the saved states of every rank of a run and
    splits what is left of the epoch over this run's ranks and workers, however many (see
    :mod:`.resumable`, which also says which stages may follow).

    Args:
        urls: shard URLs, or one brace pattern (``"s3://b/train-{000000..000099}.tar"``).
        seed: the run's seed: the same seed and epoch give the same order.
        epoch: the epoch number.
        shuffle: sample shuffle buffer per worker (0: shard order only).
        handler: WebDataset error policy for reading shards.
        resume: every rank's ``StatefulDataLoader.state_dict()`` of an interrupted run of the
            same ``urls``, ``seed`` and ``epoch`` (``None``: a whole epoch).

    Returns:
        An :class:`~.resumable.EpochDataset`; add ``.map(ndf_samples(...))``,
        ``.to_tuple(...)``, ``.batched(...)`` as usual.

    Raises:
        ValueError: ``resume=`` states that are malformed, of another epoch, or not one per
            rank and worker of the run that saved them.

    Example::

        for epoch in range(epochs):
            ds = epoch_dataset(urls, seed=1, epoch=epoch).map(ndf_samples(ndf_decoder(32))).to_tuple("ndf", "cls")
            loader = wds.WebLoader(ds, batch_size=64, num_workers=4)
    """
    import random

    from webdataset.shardlists import expand_urls

    shards = list(expand_urls(urls)) if isinstance(urls, str) else [str(u) for u in urls]
    random.Random(seed * 1000003 + epoch).shuffle(shards)
    return EpochDataset(shards, seed=seed, epoch=epoch, shuffle=shuffle, handler=handler, resume=resume)
