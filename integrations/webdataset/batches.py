"""Batched decoding: :func:`ndf_batch_decode` decodes each batch (raw ``.ndf`` bytes or :class:`~ndf_datasets.DecodedField`) in one pass."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ...codec import DecodedField, SharedBase, read_fields, render_fields
from ...codec.errors import NDFFormatError
from ...codec.format import MAGIC
from ...codec.record import is_compact
from ..sizes import SizeArg, check_size, current_size
from .bases import _cached_base
from .handlers import NDFHandler

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
    """Decodes the ``.ndf`` lists of a batch, one entropy-decoding call and one forward pass each.

    Build it with :func:`ndf_batch_decode`. A list of raw ``.ndf`` bytes (``.to_tuple("ndf",
    ...)`` then ``.batched(n)``, no per-sample decoder) is entropy-decoded with one
    :func:`~ndf_datasets.read_fields` call, where a learned base's entropy networks run once
    for the batch; a list of :class:`~ndf_datasets.DecodedField` (from :func:`ndf_read`) is
    only rendered.

    Args:
        size: output size: ``None`` (original; all images then need one size), an int or ``(h, w)``;
            or a :class:`~ndf_datasets.integrations.sizes.SharedSize` read for every batch.
        device: where to render, e.g. ``"cuda"``.
        base, base_locations: where records' bases are, for batches of raw bytes (as in
            :func:`ndf_read`; a batch has no shard URL to look next to).

    Raises:
        ValueError: an invalid ``size`` (at construction).
    """

    def __init__(
        self,
        size: SizeArg = 32,
        device: str | torch.device = "cpu",
        base: SharedBase | str | os.PathLike | None = None,
        base_locations: Iterable[str | os.PathLike] | str | None = None,
    ):
        self.size = check_size(size)
        self.device = str(device)
        self.reader = NDFHandler(None, "cpu", base, base_locations, render=False)

    def __call__(self, batch: Any) -> Any:
        """Replace every list of DecodedField in ``batch`` (tuple, list or dict) by a ``B x C x H x W`` tensor.

        Raises:
            NDFFormatError: a field renders non-finite values.
            ValueError: the batch exceeds ``LIMITS['max_decode_pixels']``.
        """
        if _is_field_list(batch) or _is_bytes_list(batch):
            return self.render(batch)
        if isinstance(batch, dict):
            return {k: self.render(v) if _is_field_list(v) or (k.endswith("ndf") and _is_bytes_list(v)) else v
                    for k, v in batch.items()}  # fmt: skip
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.render(v) if _is_field_list(v) or _is_bytes_list(v) else v for v in batch)
        if isinstance(batch, DecodedField):
            return self.render([batch])[0]
        return batch

    def read(self, blobs: Sequence[bytes]) -> list[DecodedField]:
        """Entropy-decode a batch of raw ``.ndf`` bytes in one :func:`~ndf_datasets.read_fields` call."""
        sources = [f"<.ndf member {i} of the batch>" for i in range(len(blobs))]
        return read_fields([bytes(b) for b in blobs], self.reader._base_arg(None, sources[0]), sources)

    def render(self, fields: Sequence[DecodedField] | Sequence[bytes]) -> torch.Tensor:
        """Render ``fields`` in one :func:`~ndf_datasets.render_fields` call (raw bytes are read first)."""
        if not _is_field_list(fields):  # the caller checked it is one or the other
            fields = self.read(fields)  # type: ignore[arg-type]
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


def _looks_like_ndf(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) and (is_compact(value) or bytes(value[:3]) == MAGIC)


def _is_bytes_list(value: Any) -> bool:
    """Whether a batch column is raw ``.ndf`` bytes: every item starts like an NDF file.

    A column where only some items do is a damaged records column: an error naming the first
    item that does not (a column of other bytes, e.g. un-decoded ``.cls``, is left alone).
    """
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, (bytes, bytearray, memoryview)) for v in value)
    ):
        return False
    flags = [_looks_like_ndf(v) for v in value]
    if all(flags):
        return True
    if any(flags):
        bad = flags.index(False)
        raise NDFFormatError(
            "not an .ndf file (no NDF magic) in a batch of .ndf members",
            source=f"<.ndf member {bad} of the batch>",
            offset=0,
        )
    return False


def ndf_batch_decode(
    size: SizeArg = 32,
    device: str | torch.device = "cpu",
    base: SharedBase | str | os.PathLike | None = None,
    base_locations: Iterable[str | os.PathLike] | str | None = None,
) -> NDFBatchRender:
    """A map function for after ``.batched(n)``: decodes each batch's ``.ndf`` in one pass.

    Takes batches of raw ``.ndf`` bytes (the fastest path for learned bases: in a DataLoader
    worker, ``.to_tuple("ndf", "cls").batched(128).map(ndf_batch_decode(32, base_locations=[OUT]))``
    entropy-decodes and renders each batch with one call each) or of fields from
    :func:`ndf_read`; the pixels equal :func:`ndf_decoder`'s (up to float rounding of the
    batched forward). Bases arriving in separate pickled copies (one per batch from each
    worker) are replaced by one object per hash, so their weights move to ``device`` once.

    Args:
        size: output size (or a :class:`~ndf_datasets.integrations.sizes.SharedSize`).
        device: where to render, e.g. ``"cuda"``.
        base, base_locations: for raw bytes: the base, or where ``<hash>.ndfbase`` files are.

    Raises:
        ValueError: an invalid ``size``.

    Returns:
        A picklable ``batch -> batch`` function.
    """
    return NDFBatchRender(size, device, base, base_locations)
