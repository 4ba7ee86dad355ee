"""torchvision adapter: a :class:`~torchvision.datasets.DatasetFolder` over ``.ndf`` files.

:class:`NDFImageFolder` is ``ImageFolder`` for neural-field images: same directory layout,
same ``classes`` / ``class_to_idx`` / ``samples`` / ``targets``, same override points
(``find_classes``, ``make_dataset``, ``loader``), but each sample is decoded through the one
decode path (:func:`ndf_datasets.read_field` + :func:`ndf_datasets.render_fields`) at any
output size.

With ``deferred=True`` a sample is only read and entropy-decoded in the data-loader worker;
:func:`ndf_collate` stacks those cheap items into an :class:`NDFBatch`, and the batch is
rendered in one forward pass (typically on the GPU) by :meth:`NDFBatch.decode` or the
:class:`NDFDecoder` module::

    ds = NDFImageFolder("data/train", size=32, deferred=True)
    loader = DataLoader(ds, batch_size=256, num_workers=8, collate_fn=ndf_collate, pin_memory=True)
    decoder = ds.decoder().to("cuda")
    for batch in loader:
        x, y = decoder(batch), batch.targets.to("cuda")

Requires the ``torchvision`` extra (``pip install 'ndf-datasets[torchvision]'``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import default_collate

try:
    from torchvision.datasets import DatasetFolder
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ndf_datasets.integrations.torchvision needs torchvision; install 'ndf-datasets[torchvision]'"
    ) from exc

from ..codec.bases import base_filename, load_base_cached, resolve_base
from ..codec.decode import DecodedField, Size, read_field, render_fields, resolve_size
from ..codec.errors import NDFBaseError, NDFError
from ..codec.io import read_url
from ..codec.shared import SharedBase, build_arch

__all__ = [
    "DATASET_SIZE",
    "NDF_EXTENSIONS",
    "ArchSpec",
    "BaseRef",
    "NDFBatch",
    "NDFDecoder",
    "NDFImageFolder",
    "NDFItem",
    "ndf_collate",
    "ndf_loader",
]

NDF_EXTENSIONS = (".ndf",)

#: ``on_error`` values accepted by :class:`NDFImageFolder`.
ON_ERROR = ("raise", "skip")

#: how many ``(path, message)`` pairs :attr:`NDFImageFolder.errors` keeps (the count is exact).
MAX_ERRORS_KEPT = 100

BaseArg = SharedBase | str | os.PathLike | None

logger = logging.getLogger(__name__)


class _DatasetSize:
    """Sentinel: "the output size the batch was read for" (the dataset's ``size``)."""

    def __repr__(self) -> str:
        return "DATASET_SIZE"


#: default ``size`` of :meth:`NDFBatch.decode` / :class:`NDFDecoder`: the dataset's ``size``.
DATASET_SIZE: Any = _DatasetSize()


def ndf_loader(path: str | os.PathLike) -> bytes:
    """The default loader: the raw bytes of one ``.ndf`` file (local path or fsspec URL).

    Args:
        path: the sample's path, as listed in ``samples``.

    Raises:
        NDFLimitError: the file is larger than ``LIMITS['max_file_bytes']``.
        OSError: the file can not be read.

    Returns:
        The file's bytes; the dataset parses and decodes them.
    """
    return read_url(path)


# ----------------------------------------------------------------------------- deferred items


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


def _resolve(base_hash: bytes, dirs: Sequence[str], source: str) -> SharedBase:
    """:func:`resolve_base`; any failure is an :class:`NDFBaseError` naming the record."""
    try:
        return resolve_base(base_hash, list(dirs))
    except NDFBaseError as exc:
        tried = [f"{d.rstrip('/')}/{base_filename(base_hash)}" for d in dirs]
        raise NDFBaseError(
            f"needs shared base {base_hash.hex()}, which was not found (looked for {tried}); "
            f"pass base=<SharedBase or path> or save the base as {base_filename(base_hash)} in the dataset root",
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


# ----------------------------------------------------------------------------- the dataset


class NDFImageFolder(DatasetFolder):
    """An ``ImageFolder`` of ``.ndf`` neural-field images, decoded at any size::

        root/
        ├── <hash hex>.ndfbase      (only for records: the dataset's shared base)
        ├── cat
        │   ├── 000.ndf
        │   ├── 001.ndf
        │   └── ...
        │       └── 002.ndf
        └── dog
            ├── 123.ndf
            └── ...

    This class inherits from :class:`~torchvision.datasets.DatasetFolder`, so the same methods
    (``find_classes``, ``make_dataset``) can be overridden to customise the dataset.

    A file is a standalone field or a record of a shared base. A record names its base by
    content hash; the base is the ``base`` argument or, by default, ``root/<hash hex>.ndfbase``.
    Bases are loaded once per process and cached by hash (:func:`ndf_datasets.resolve_base`).

    **Deferred decoding.** With ``deferred=True``, ``ds[i]`` returns ``(NDFItem, target)``:
    the file is read and entropy-decoded (cheap, in the loader worker) but not rendered. Pass
    ``collate_fn=ndf_collate`` to the ``DataLoader`` and render each batch in one forward pass
    with :meth:`NDFBatch.decode` or ``ds.decoder()``. Pixels equal ``deferred=False``.

    **Bad files.** With ``on_error="raise"`` (default) a corrupt or truncated file raises an
    :class:`~ndf_datasets.NDFError` naming its path. With ``on_error="skip"``, ``ds[i]``
    returns ``None`` for a file that can not be read or decoded (an ``NDFError`` other than
    :class:`~ndf_datasets.NDFBaseError`, or an ``OSError``), logs a warning and counts it in
    :attr:`error_count` / :attr:`errors`. ``len(ds)`` does not change: pass
    ``collate_fn=ndf_collate``, which drops the ``None`` samples, so a batch may hold fewer
    than ``batch_size`` samples; its ``skipped`` attribute counts the dropped ones. The
    dataset's counters are per process: with ``num_workers > 0`` they count inside each
    worker, so sum ``batch.skipped`` in the training loop instead. A missing, unreadable or
    wrong shared base is a setup error, not a bad sample: it always raises
    :class:`~ndf_datasets.NDFBaseError`.

    Args:
        root (str or ``pathlib.Path``): Root directory path.
        size: output size: an int (square), ``(height, width)``, or ``None`` (each image's
            original size).
        transform (callable, optional): A function/transform that takes the decoded
            ``C x H x W`` float tensor and returns a transformed version. Not allowed with
            ``deferred=True`` (apply it to the decoded batch instead).
        target_transform (callable, optional): A function/transform that takes in the
            target and transforms it.
        loader (callable, optional): A function returning the bytes of a ``.ndf`` file given
            its path (default :func:`ndf_loader`).
        is_valid_file (callable, optional): A function that takes the path of a file and
            checks if it is a valid file; replaces the ``.ndf`` extension check.
        allow_empty (bool, optional): If True, empty folders are considered to be valid
            classes. An error is raised on empty folders if False (default).
        base: the shared base of the records: a :class:`~ndf_datasets.SharedBase`, a path to
            its file, or ``None`` to find it by hash in ``root``.
        device: where ``ds[i]`` renders (``deferred=False``). Keep ``"cpu"`` with workers;
            to decode on a GPU use ``deferred=True`` and :class:`NDFDecoder`.
        deferred (bool): return unrendered :class:`NDFItem` samples (see above).
        on_error (str): ``"raise"`` or ``"skip"`` (see above).

    Raises:
        ValueError: invalid ``size``, ``on_error``, or ``transform`` with ``deferred=True``.
        FileNotFoundError: no class folders, a class without ``.ndf`` files (unless
            ``allow_empty``), or a ``base`` path that does not exist.
        NDFError: the ``base`` file is not a valid shared base.

    Attributes:
        classes (list): List of the class names sorted alphabetically.
        class_to_idx (dict): Dict with items (class_name, class_index).
        samples (list): List of (sample path, class_index) tuples; ``imgs`` is the same list.
        targets (list): The class_index value for each image in the dataset.
        error_count (int): samples skipped in this process (``on_error="skip"``).
        errors (deque): the last :data:`MAX_ERRORS_KEPT` ``(path, message)`` pairs skipped.
    """

    def __init__(
        self,
        root: str | Path,
        size: Size = 32,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        loader: Callable[[str], bytes] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        base: BaseArg = None,
        device: str | torch.device = "cpu",
        deferred: bool = False,
        on_error: str = "raise",
    ) -> None:
        _check_options(size, on_error, transform, deferred)
        super().__init__(
            root,
            loader or ndf_loader,
            NDF_EXTENSIONS if is_valid_file is None else None,
            transform=transform,
            target_transform=target_transform,
            is_valid_file=is_valid_file,
            allow_empty=allow_empty,
        )
        self.imgs = self.samples
        self.size = size
        self.device = torch.device(device)
        self.deferred = deferred
        self.on_error = on_error
        self.base = os.fspath(base) if isinstance(base, (str, os.PathLike)) else base
        if isinstance(self.base, str):
            load_base_cached(self.base)  # fail now on a missing or invalid base file
        self.error_count = 0
        self.errors: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_ERRORS_KEPT)

    def __getitem__(self, index: int) -> tuple[Any, Any] | None:
        """
        Args:
            index (int): Index

        Raises:
            NDFError: the file is corrupt, truncated or needs a base that can not be found
                (the message names the path); with ``on_error="skip"`` only base errors.

        Returns:
            tuple: ``(image, target)`` with a ``C x H x W`` float32 image in [0, 1]
            (``deferred=False``) or ``(NDFItem, target)`` (``deferred=True``); ``None`` for
            a skipped sample.
        """
        path, target = self.samples[index]
        try:
            sample = self._read(path)
        except NDFBaseError:
            raise
        except (NDFError, OSError) as exc:
            if self.on_error == "raise":
                raise
            self._skip(path, exc)
            return None
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def decoder(self, size: Size = DATASET_SIZE) -> NDFDecoder:
        """An :class:`NDFDecoder` for this dataset's deferred batches (its size and base)."""
        return NDFDecoder(self.size if size is DATASET_SIZE else size, base=self.base)

    def extra_repr(self) -> str:
        base = self.base if not isinstance(self.base, SharedBase) else f"<SharedBase {self.base.hash.hex()}>"
        return "\n".join(
            [f"Size: {self.size}", f"Deferred: {self.deferred}", f"On error: {self.on_error}", f"Base: {base}"]
        )

    # ------------------------------------------------------------------ helpers

    def _read(self, path: str) -> torch.Tensor | NDFItem:
        blob = self.loader(path)
        field = read_field(blob, self._base_arg(path), source=path)
        if self.deferred:
            return self._item(field, path)
        return render_fields([field], self.size, self.device)[0]

    def _base_arg(self, path: str) -> SharedBase | Callable[[bytes], SharedBase]:
        """What :func:`read_field` needs to find a record's base: the base itself, or a resolver
        called with the record's hash (only for records; bases load once per process)."""
        if isinstance(self.base, SharedBase):
            return self.base
        if isinstance(self.base, str):
            return lambda base_hash: _load_file(self.base, path)
        return lambda base_hash: _resolve(base_hash, [os.fspath(self.root)], path)

    def _base_ref(self, base: SharedBase) -> BaseRef:
        if isinstance(self.base, str):
            return BaseRef(base.hash, file=self.base)
        return BaseRef(base.hash, dirs=(os.fspath(self.root),))

    def _item(self, f: DecodedField, path: str) -> NDFItem:
        ref = None if f.base is None else self._base_ref(f.base)
        return NDFItem(f.latents, f.weights, ArchSpec.of(f), ref, path, self.size)

    def _skip(self, path: str, exc: Exception) -> None:
        self.error_count += 1
        self.errors.append((path, str(exc)))
        logger.warning("skipping %s: %s", path, exc)


def _check_options(size: Size, on_error: str, transform: Callable | None, deferred: bool) -> None:
    resolve_size(size, 1, 1)
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if deferred and transform is not None:
        raise ValueError(
            "transform= needs pixels, which deferred=True produces only after collation; "
            "apply it to the decoded batch, e.g. nn.Sequential(ds.decoder(), transform)"
        )
