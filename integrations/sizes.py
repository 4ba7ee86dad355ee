"""Output sizes that change between epochs: progressive resizing without rebuilding a loader.

A neural field decodes to any size, so a loader can train at 16, then 24, then 32 pixels
from the same records. :class:`SharedSize` is the size such a loader reads: a small tensor in
shared memory, so a change made in the training loop (:meth:`SharedSize.set`) is seen by the
main process *and* by every DataLoader worker, persistent ones included (they inherit the
memory by ``fork`` or receive it by handle with ``spawn``), without rebuilding the dataset,
the pipeline or the loader.

Every loader takes one where it takes a size:
:meth:`~ndf_datasets.integrations.torchvision.NDFImageFolder.set_size` (which uses one inside),
``ndf_decoder(size=SharedSize(...))`` / ``ndf_batch_decode(size=...)`` for WebDataset and
``render_transform(size=...)`` for HF ``datasets``; any other zero-argument callable returning a
size works too, evaluated where the decode runs (a plain Python closure does not cross into
worker processes: use a :class:`SharedSize` there).

Samples a worker had already decoded (``prefetch_factor`` batches per worker) keep the old
size: change the size between epochs, before ``iter(loader)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import torch

from ..codec import Size, resolve_size

__all__ = ["SharedSize", "SizeArg", "current_size", "check_size"]

_NONE, _SQUARE, _PAIR = 0, 1, 2

#: what the loaders take as an output size: a fixed one, a :class:`SharedSize` or any callable returning one
SizeArg = Union[Size, "SharedSize", Callable[[], Size]]


class SharedSize:
    """An output size in shared memory: ``set`` it in the training loop, every worker decodes at it.

    Args:
        size: the initial size: ``None`` (each image's original size), an int (square) or
            ``(height, width)``.

    Raises:
        ValueError: an invalid size.

    Example::

        size = SharedSize(16)
        ds = NDFImageFolder("data/train", size=size)          # or ndf_decoder(size=size), render_transform(size=size)
        loader = DataLoader(ds, batch_size=256, num_workers=4, persistent_workers=True)
        for epoch, px in enumerate([16, 16, 24, 24, 32]):
            size.set(px)                                       # no new dataset, no new loader
            for x, y in loader: ...
    """

    def __init__(self, size: Size = None):
        self._cell = torch.zeros(3, dtype=torch.int64).share_memory_()
        self.set(size)

    def set(self, size: Size) -> None:
        """Make ``size`` the output size of every sample decoded from now on, in every process."""
        if size is None:
            self._cell.copy_(torch.tensor([_NONE, 0, 0]))
            return
        h, w = resolve_size(size, 1, 1)  # validates
        self._cell.copy_(torch.tensor([_SQUARE if isinstance(size, int) else _PAIR, h, w]))

    def get(self) -> Size:
        """The current size (``None``, an int or ``(height, width)``, as it was set)."""
        kind, h, w = self._cell.tolist()
        if kind == _NONE:
            return None
        return int(h) if kind == _SQUARE else (int(h), int(w))

    __call__ = get

    def __repr__(self) -> str:
        return f"SharedSize({self.get()!r})"


def current_size(size: SizeArg) -> Size:
    """The size to decode at now: ``size`` itself, or what the :class:`SharedSize` / callable says."""
    return size() if callable(size) else size


def check_size(size: SizeArg) -> SizeArg:
    """Validate a size argument now (a callable: its current value), not in a worker; returns it (lists become tuples)."""
    value = current_size(size)
    if value is not None:
        resolve_size(value, 1, 1)
    return tuple(size) if isinstance(size, list) else size
