"""Batched rendering: :func:`ndf_batch_decode` renders each batch of :class:`~ndf_datasets.DecodedField` in one pass."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...codec import DecodedField, SharedBase, render_fields
from ..sizes import SizeArg, check_size, current_size
from .bases import _cached_base

if TYPE_CHECKING:
    import torch

__all__ = ["NDFBatchRender", "ndf_batch_decode"]

_canonical_lock = threading.Lock()
_canonical: dict[bytes, SharedBase] = {}


def _canonical_base(base: SharedBase) -> SharedBase:
    """One object per base hash in this process, so batches share its device weights."""
    base_hash = base.hash
    cached = _cached_base(base_hash)
    if cached is not None:
        return cached
    with _canonical_lock:
        return _canonical.setdefault(base_hash, base)


class NDFBatchRender:
    """Renders the :class:`~ndf_datasets.DecodedField` lists of a batch, one forward pass each.

    Build it with :func:`ndf_batch_decode`.

    Args:
        size: output size: ``None`` (original; all images then need one size), an int or ``(h, w)``;
            or a :class:`~ndf_datasets.integrations.sizes.SharedSize` read for every batch.
        device: where to render, e.g. ``"cuda"``.

    Raises:
        ValueError: an invalid ``size`` (at construction).
    """

    def __init__(self, size: SizeArg = 32, device: str | torch.device = "cpu"):
        self.size = check_size(size)
        self.device = str(device)

    def __call__(self, batch: Any) -> Any:
        """Replace every list of DecodedField in ``batch`` (tuple, list or dict) by a ``B x C x H x W`` tensor.

        Raises:
            NDFFormatError: a field renders non-finite values.
            ValueError: the batch exceeds ``LIMITS['max_decode_pixels']``.
        """
        if _is_field_list(batch):
            return self.render(batch)
        if isinstance(batch, dict):
            return {k: self.render(v) if _is_field_list(v) else v for k, v in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.render(v) if _is_field_list(v) else v for v in batch)
        if isinstance(batch, DecodedField):
            return self.render([batch])[0]
        return batch

    def render(self, fields: Sequence[DecodedField]) -> torch.Tensor:
        """Render ``fields`` in one :func:`~ndf_datasets.render_fields` call."""
        bases: dict[int, SharedBase] = {}
        fixed = []
        for f in fields:
            if f.base is not None:
                base = bases.setdefault(id(f.base), _canonical_base(f.base))
                if base is not f.base:
                    f = dataclasses.replace(f, base=base)
            fixed.append(f)
        return render_fields(fixed, current_size(self.size), self.device)

    def __repr__(self) -> str:
        return f"ndf_batch_decode(size={self.size!r}, device={self.device!r})"


def _is_field_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, DecodedField) for v in value)


def ndf_batch_decode(size: SizeArg = 32, device: str | torch.device = "cpu") -> NDFBatchRender:
    """A map function for after ``.batched(n)``: renders each batch's fields in one pass.

    Pairs with :func:`ndf_read`; the pixels equal :func:`ndf_decoder`'s. Bases arriving in
    separate pickled copies (one per batch from each worker) are replaced by one object per
    hash, so their weights move to ``device`` once.

    Args:
        size: output size (or a :class:`~ndf_datasets.integrations.sizes.SharedSize`).
        device: where to render, e.g. ``"cuda"``.

    Raises:
        ValueError: an invalid ``size``.

    Returns:
        A picklable ``batch -> batch`` function.
    """
    return NDFBatchRender(size, device)
