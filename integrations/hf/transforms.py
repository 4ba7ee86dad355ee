"""Whole batches and ranks with ``datasets``: :func:`render_transform` (one forward pass) and :func:`split_for_rank`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...codec import render_fields
from ..sizes import SizeArg, check_size, current_size
from .feature import NDFImage

__all__ = ["render_transform", "split_for_rank"]


def render_transform(
    column: str = "image",
    size: SizeArg = None,
    device: str | torch.device = "cpu",
    base: str | None = None,
) -> Callable[[dict], dict]:
    """A ``set_transform`` function that renders a whole batch in one forward pass.

    Use it on a column cast to ``NDFImage(decode=False)`` so ``datasets`` hands over the raw
    rows; the column becomes one ``B x C x H x W`` tensor on ``device``.

    Args:
        column: the NDFImage column.
        size: output size (required when the batch mixes original sizes); a
            :class:`~ndf_datasets.integrations.sizes.SharedSize` is read for every batch, so
            progressive resizing needs no new transform.
        device: where to render.
        base: as in :class:`NDFImage`.

    Example::

        ds = ds.cast_column("image", NDFImage(decode=False, base=...))
        ds.set_transform(render_transform("image", size=32, device="cuda"))
        batch = ds[:256]["image"]            # 256 x 3 x 32 x 32 on the GPU
    """
    size = check_size(size)
    reader = NDFImage(decode=True, base=base)

    def transform(batch: dict) -> dict:
        values = batch[column]
        if not values:
            return batch
        if all(isinstance(v, torch.Tensor) for v in values):  # already decoded
            batch[column] = torch.stack(values).to(device)
        else:
            batch[column] = render_fields([reader.read_field(v) for v in values], current_size(size), device)
        return batch

    return transform


# ----------------------------------------------------------------------------- distributed epochs


def split_for_rank(
    dataset: Any, rank: int, world_size: int, epoch: int | None = None, format: str | None = None
) -> Any:
    """This rank's part of a (streaming) dataset for one epoch: exactly once over all ranks.

    ``datasets.distributed.split_dataset_by_node``, then ``with_format(format)``, then
    ``set_epoch(epoch)`` *last*: in datasets 5.2 both ``split_dataset_by_node`` and
    ``with_format`` return a dataset whose epoch is back at 0, so a ``set_epoch`` made
    before them is lost and every epoch silently repeats the first one's shuffle (apply any
    other transform before calling this, for the same reason). With ``n_shards`` a multiple
    of ``world_size`` each rank gets whole shards; DataLoader workers then split the rank's
    shards among themselves. The order is fixed by the dataset's shuffle seed and ``epoch``.

    Args:
        dataset: a ``datasets.IterableDataset`` (typically ``load_dataset(..., streaming=True)
            .shuffle(seed=..., buffer_size=...)``) or a map-style ``Dataset``.
        rank: this process's rank.
        world_size: number of ranks.
        epoch: the epoch (``None``: leave it as it is).
        format: ``with_format`` type, e.g. ``"torch"`` (``None``: unchanged).

    Example::

        ds = load_dataset("s3://bucket/cifar", split="train", streaming=True).shuffle(seed=1, buffer_size=1000)
        for epoch in range(epochs):
            part = split_for_rank(ds, rank, world, epoch, format="torch")
            loader = DataLoader(part, batch_size=64, num_workers=4)
    """
    from datasets.distributed import split_dataset_by_node

    part = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if format is not None:
        part = part.with_format(format)
    if epoch is not None and hasattr(part, "set_epoch"):
        part.set_epoch(epoch)
    return part
