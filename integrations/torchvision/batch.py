"""Deferred decoding for the torchvision adapter: :class:`NDFItem` in workers, :class:`NDFBatch` per batch.

An :class:`NDFItem` is a sample read and entropy-decoded but not rendered (cheap to pickle);
:func:`ndf_collate` stacks items into an :class:`NDFBatch`, which :meth:`NDFBatch.decode` or
the :class:`NDFDecoder` module renders in one forward pass per architecture. Needs only torch.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import default_collate

from ...codec import (
    DecodedField,
    NDFBaseError,
    NDFError,
    SharedBase,
    Size,
    base_filename,
    build_arch,
    find_bases,
    load_base_cached,
    render_fields,
    resolve_base,
    resolve_size,
)

__all__ = [
    "DATASET_SIZE",
    "ArchSpec",
    "BaseArg",
    "BaseRef",
    "CollatedBatch",
    "NDFBatch",
    "NDFDecoder",
    "NDFGroup",
    "NDFItem",
    "ndf_collate",
]

BaseArg = SharedBase | str | os.PathLike | None


class _DatasetSize:
    """Sentinel: "the output size the batch was read for" (the dataset's ``size``)."""

    def __repr__(self) -> str:
        return "DATASET_SIZE"


#: default ``size`` of :meth:`NDFBatch.decode` / :class:`NDFDecoder`: the dataset's ``size``.
DATASET_SIZE: Any = _DatasetSize()


class ArchSpec(NamedTuple):
    """Header values that rebuild a field's architecture (instead of pickling the arch)."""

    arch_id: int
    config: tuple[int, ...]
    height: int
    width: int
    channels: int

    @classmethod
    def of(cls, f: DecodedField) -> ArchSpec:
        a = f.arch
        return cls(a.arch_id, tuple(a.config), a.height, a.width, a.channels)


@dataclass(frozen=True)
class BaseRef:
    """Where a record's shared base can be found, without the base itself.

    Attributes:
        hash: the base's content hash (what the record stores).
        file: an explicit base file (``base=`` given as a path), or ``None``.
        dirs: directories / URL prefixes holding ``<hash hex>.ndfbase`` (the dataset root).
    """

    hash: bytes
    file: str | None = None
    dirs: tuple[str, ...] = ()

    def load(self, source: str = "<batch>") -> SharedBase:
        """The base, loaded once per process (cached by content hash).

        Raises:
            NDFBaseError: it is not where the reference says, or the file holds another base.
        """
        if self.file is not None:
            base = _load_file(self.file, source)
            base.check(self.hash, source)
            return base
        return _resolve(self.hash, self.dirs, source)


def _resolve(base_hash: bytes, dirs: Sequence[str], source: str) -> SharedBase | list[SharedBase]:
    """:func:`resolve_base`; any failure is an :class:`NDFBaseError` naming the record. A compact
    record's tag (or, version 3, no tag) gives the candidate bases, which the codec tries by CRC."""
    try:
        return resolve_base(base_hash, list(dirs)) if len(base_hash) == 8 else find_bases(base_hash, list(dirs))
    except NDFBaseError as exc:
        full = len(base_hash) == 8
        name = base_filename(base_hash) if full else f"{base_hash.hex()}*.ndfbase"
        tried = [f"{d.rstrip('/')}/{name}" for d in dirs]
        raise NDFBaseError(
            f"needs shared base {base_hash.hex() if full else 'file'}, which was not found (looked for {tried}); "
            f"pass base=<SharedBase or path> or save the base as {base_filename(base_hash) if full else '<its hash>.ndfbase'} "
            "in the dataset root",
            source=source,
        ) from exc
    except (NDFError, OSError) as exc:
        raise NDFBaseError(f"its shared base {base_hash.hex()} can not be loaded: {exc}", source=source) from exc


def _load_file(path: str, source: str) -> SharedBase:
    """:func:`load_base_cached`; any failure is an :class:`NDFBaseError` naming the record."""
    try:
        return load_base_cached(path)
    except (NDFError, OSError) as exc:
        raise NDFBaseError(f"its shared base can not be loaded: {exc}", source=source) from exc


@dataclass
class NDFItem:
    """One sample read and entropy-decoded but not rendered (``deferred=True``).

    Cheap to pickle: CPU tensors and a few ints. A record carries a :class:`BaseRef`, never
    the base; a standalone field carries its own (small) weights.

    Attributes:
        latents: latent tensors, no batch dimension.
        weights: a standalone field's weights, or ``None`` for a record.
        arch: the architecture's header values.
        base: where a record's base is, or ``None`` for a standalone field.
        source: the file path, for error messages.
        size: the output size the dataset was built with (the default of :meth:`NDFBatch.decode`).
    """

    latents: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None
    arch: ArchSpec
    base: BaseRef | None
    source: str
    size: Size = None


@dataclass
class NDFGroup:
    """Same-architecture items of a batch, their tensors stacked along dimension 0."""

    indices: list[int]
    arch: ArchSpec
    base: BaseRef | None
    latents: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] | None

    def tensors(self) -> list[torch.Tensor]:
        return list(self.latents.values()) + list((self.weights or {}).values())

    def apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> NDFGroup:
        weights = None if self.weights is None else {k: fn(v) for k, v in self.weights.items()}
        return dataclasses.replace(self, latents={k: fn(v) for k, v in self.latents.items()}, weights=weights)

    def fields(self, base: SharedBase | None, sources: Sequence[str]) -> list[DecodedField]:
        """One :class:`DecodedField` per item (views of the stacked tensors)."""
        spec = self.arch
        if base is not None:
            arch = base.arch_for(spec.height, spec.width)
        else:
            arch = build_arch(spec.arch_id, spec.config, spec.height, spec.width, spec.channels, sources[self.indices[0]])
        out = []
        for j, i in enumerate(self.indices):
            latents = {k: v[j] for k, v in self.latents.items()}
            weights = None if self.weights is None else {k: v[j] for k, v in self.weights.items()}
            out.append(DecodedField(arch, latents, weights, base, None, sources[i]))
        return out


def _given_bases(base: BaseArg | Sequence[SharedBase]) -> dict[bytes, SharedBase]:
    if base is None:
        return {}
    if isinstance(base, SharedBase):
        return {base.hash: base}
    if isinstance(base, (str, os.PathLike)):
        b = load_base_cached(base)
        return {b.hash: b}
    return {b.hash: b for b in base}


@dataclass
class NDFBatch:
    """A collated batch of deferred samples; render it with :meth:`decode` or :class:`NDFDecoder`.

    Attributes:
        groups: the items' tensors, stacked per architecture / base.
        targets: the collated targets (a ``LongTensor`` of class indices by default).
        sources: each item's file path, in batch order.
        size: the dataset's output size (default of :meth:`decode`), or ``None`` (original).
        skipped: samples of this batch dropped by ``on_error="skip"``.
    """

    groups: list[NDFGroup]
    targets: Any
    sources: list[str]
    size: Size = None
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def device(self) -> torch.device:
        """Where the batch's tensors are (CPU until :meth:`to`)."""
        for g in self.groups:
            for t in g.tensors():
                return t.device
        return torch.device("cpu")

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> NDFBatch:
        targets = fn(self.targets) if isinstance(self.targets, torch.Tensor) else self.targets
        return dataclasses.replace(self, groups=[g.apply(fn) for g in self.groups], targets=targets)

    def pin_memory(self) -> NDFBatch:
        """A copy in page-locked memory (called by ``DataLoader(pin_memory=True)``).

        Raises:
            RuntimeError: no accelerator is available to pin memory for.
        """
        return self._map(lambda t: t.pin_memory())

    def to(self, device: str | torch.device, non_blocking: bool = False) -> NDFBatch:
        """A copy with every tensor (latents, weights, targets) on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def decode(
        self,
        device: str | torch.device | None = None,
        size: Size = DATASET_SIZE,
        base: BaseArg | Sequence[SharedBase] = None,
    ) -> torch.Tensor:
        """Render the batch in one forward pass per architecture through :func:`render_fields`.

        Args:
            device: where to render (default: where the batch is, see :meth:`to`).
            size: ``None`` (original size), an int (square) or ``(height, width)``; by default
                the ``size`` the dataset was built with.
            base: shared base(s) to use for records with a matching hash (a
                :class:`SharedBase`, a path, or a list of bases). Needed only when the dataset
                was given an in-memory base that is not saved in its root.

        Raises:
            NDFBaseError: a record's base can not be found.
            ValueError: an invalid size, or items of different sizes with ``size=None``.

        Returns:
            A ``B x C x H x W`` float32 tensor in [0, 1]; the same pixels as indexing the
            dataset with ``deferred=False``. An empty batch gives a ``0 x 0 x 0 x 0`` tensor.
        """
        size = self.size if size is DATASET_SIZE else size
        device = self.device if device is None else torch.device(device)
        if not self.sources:
            return torch.empty((0, 0, 0, 0), device=device)
        given = _given_bases(base)
        fields: list[DecodedField | None] = [None] * len(self.sources)
        for g in self.groups:
            b = None
            if g.base is not None:
                b = given.get(g.base.hash) or g.base.load(self.sources[g.indices[0]])
            for i, f in zip(g.indices, g.fields(b, self.sources)):
                fields[i] = f
        return render_fields(fields, size, device)  # type: ignore[arg-type]


class CollatedBatch(list):
    """``[images, targets]`` as ``default_collate`` returns it, plus ``skipped`` (a count)."""

    skipped: int = 0


def _group_items(items: Sequence[NDFItem]) -> list[NDFGroup]:
    by_key: dict[tuple, list[int]] = collections.defaultdict(list)
    for i, it in enumerate(items):
        by_key[(it.arch, it.base)].append(i)
    groups = []
    for (arch, base), idx in by_key.items():
        first = items[idx[0]]
        latents = {k: torch.stack([items[i].latents[k] for i in idx]) for k in first.latents}
        weights = None
        if first.weights is not None:
            weights = {k: torch.stack([items[i].weights[k] for i in idx]) for k in first.weights}  # type: ignore[index]
        groups.append(NDFGroup(idx, arch, base, latents, weights))
    return groups


def ndf_collate(samples: Sequence[tuple[Any, Any] | None]) -> NDFBatch | CollatedBatch:
    """``collate_fn`` for :class:`NDFImageFolder`: drops skipped samples, batches the rest.

    Args:
        samples: what the dataset returned: ``(NDFItem, target)`` (``deferred=True``),
            ``(image, target)`` (``deferred=False``), or ``None`` for a sample skipped by
            ``on_error="skip"``.

    Raises:
        TypeError: deferred and decoded samples are mixed.

    Returns:
        For deferred samples an :class:`NDFBatch`; otherwise ``[images, targets]`` exactly as
        ``default_collate`` builds it (a :class:`CollatedBatch`, a list). Both carry
        ``skipped``, the number of ``None`` samples dropped. If every sample was skipped,
        the result is empty (``len(batch) == 0`` / empty tensors).
    """
    kept = [s for s in samples if s is not None]
    skipped = len(samples) - len(kept)
    kinds = {isinstance(s[0], NDFItem) for s in kept}
    if len(kinds) > 1:
        raise TypeError("ndf_collate got deferred (NDFItem) and decoded samples in one batch")
    if kinds == {True}:
        items = [s[0] for s in kept]
        sizes = {it.size for it in items}
        size = sizes.pop() if len(sizes) == 1 else None
        targets = default_collate([s[1] for s in kept])
        return NDFBatch(_group_items(items), targets, [it.source for it in items], size, skipped)
    out = CollatedBatch(default_collate(kept) if kept else [torch.empty(0), torch.empty(0, dtype=torch.long)])
    out.skipped = skipped
    return out


class NDFDecoder(nn.Module):
    """Renders an :class:`NDFBatch`; ``.to(device)`` picks where (e.g. the training GPU).

    Example::

        decoder = NDFDecoder(size=64).to("cuda")
        images = decoder(batch)            # B x C x 64 x 64 on cuda

    Args:
        size: output size (``None``: original; int: square; ``(height, width)``); by default
            the size the dataset was built with.
        base: shared base(s) for records (see :meth:`NDFBatch.decode`); not needed when the
            base was given as a path or lives in the dataset root.
    """

    _anchor: torch.Tensor

    def __init__(self, size: Size = DATASET_SIZE, base: BaseArg | Sequence[SharedBase] = None) -> None:
        super().__init__()
        if size is not DATASET_SIZE:
            resolve_size(size, 1, 1)
        self.size = size
        self.base = base
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    def forward(self, batch: NDFBatch) -> torch.Tensor:
        """Decode ``batch`` on this module's device.

        Returns:
            ``B x C x H x W`` float32 in [0, 1].
        """
        return batch.decode(device=self._anchor.device, size=self.size, base=self.base)

    def extra_repr(self) -> str:
        return f"size={self.size!r}"
