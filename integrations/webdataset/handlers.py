"""The WebDataset handlers: :func:`ndf_decoder` / :func:`ndf_read` for ``.decode``, :func:`ndf_samples` for ``.map``.

A handler is an ordinary WebDataset ``f(key, data)`` decoder for ``.ndf`` members that also
claims the members whose default decoders would execute code (:data:`CODE_EXTENSIONS`);
:class:`NDFSampleMap` applies one to whole samples, knowing their shard and key. See
:mod:`ndf_datasets.integrations.webdataset` for the whole adapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...codec import BaseLookup, DecodedField, SharedBase, load_base_cached, read_field, render_fields
from ...codec.errors import NDFBaseError, NDFError
from ..s3 import storage_options_for
from ..sizes import SizeArg, check_size, current_size
from .bases import _as_locations, _find_base, shard_dir
from .errors import NDFDecodeError

if TYPE_CHECKING:
    import torch

__all__ = ["CODE_EXTENSIONS", "NDFHandler", "NDFSampleMap", "ndf_decoder", "ndf_read", "ndf_samples"]

#: Members whose WebDataset default decoders execute code (``pickle.loads``, ``torch.load``).
#: NDF handlers return these members' raw bytes instead (see the module docstring).
CODE_EXTENSIONS: tuple[str, ...] = ("pyd", "pickle", "pkl", "pth")


def _matches(key: str, extensions: Sequence[str]) -> bool:
    """WebDataset's ``handle_extension`` rule: ``"seg.ndf"`` matches ``"ndf"`` and ``"seg.ndf"``."""
    parts = key.lower().split(".")
    for target in extensions:
        want = target.split(".")
        if len(want) <= len(parts) and parts[-len(want) :] == want:
            return True
    return False


class NDFHandler:
    """WebDataset handler ``f(key, data) -> value | None`` for ``.ndf`` members.

    Returns ``None`` for every other extension, so it chains with other handlers
    (``.decode(ndf_decoder(), "pil")``). Build it with :func:`ndf_decoder` (tensors) or
    :func:`ndf_read` (:class:`~ndf_datasets.DecodedField`, for :func:`ndf_batch_decode`).

    Args:
        size: output size: ``None`` (original), an int (square) or ``(height, width)``; or a
            :class:`~ndf_datasets.integrations.sizes.SharedSize` (any callable returning a
            size), read for every sample: progressive resizing without a new pipeline.
        device: where to render.
        base: the shared base for records: a SharedBase, or its path/URL (loaded once per process).
        base_locations: directories / URL prefixes holding ``<hash>.ndfbase`` files.
        extensions: space-separated extensions to decode (``"ndf"`` matches ``x.ndf``, ``x.seg.ndf``).
        render: ``False`` to return the un-rendered :class:`~ndf_datasets.DecodedField`.
        allow_code: ``False`` (default): members with a :data:`CODE_EXTENSIONS` extension
            are returned as raw bytes, so WebDataset's default post-handlers never unpickle
            or ``torch.load`` them; ``True``: leave them to WebDataset (trusted data only).

    Raises:
        ValueError: an invalid ``size`` (at construction).
    """

    def __init__(
        self,
        size: SizeArg = 32,
        device: str | torch.device = "cpu",
        base: SharedBase | str | os.PathLike | None = None,
        base_locations: Iterable[str | os.PathLike] | str | None = None,
        extensions: str = "ndf",
        render: bool = True,
        allow_code: bool = False,
    ):
        self.size = check_size(size)  # validate now, not in a worker
        self.device = str(device)
        self.base = os.fspath(base) if isinstance(base, (str, os.PathLike)) else base
        self.base_locations = _as_locations(base_locations)
        self.extensions = tuple(extensions.lower().split())
        if not self.extensions:
            raise ValueError("extensions must name at least one extension, e.g. 'ndf'")
        self.render = render
        self.allow_code = bool(allow_code)

    def matches(self, key: str) -> bool:
        """Whether this handler decodes members with extension ``key``."""
        return _matches(key, self.extensions)

    def __call__(self, key: str, data: bytes) -> torch.Tensor | DecodedField | bytes | None:
        """Decode ``data`` if ``key`` is one of the handler's extensions, else return ``None``.

        A :data:`CODE_EXTENSIONS` member is returned as its raw bytes (unless ``allow_code``),
        which ends WebDataset's handler chain before any unpickling decoder.

        Raises:
            NDFError: the member is not a valid ``.ndf`` (a subclass says why).
        """
        if not self.matches(key):
            if not self.allow_code and _matches(key, CODE_EXTENSIONS):
                return bytes(data)
            return None
        return self.convert(data, source=f"<.{key} member>")

    def convert(self, data: bytes, shard: str | None = None, source: str = "<bytes>") -> torch.Tensor | DecodedField:
        """Decode one member's bytes (to a tensor, or a DecodedField with ``render=False``).

        Args:
            data: the ``.ndf`` bytes.
            shard: the shard URL, whose directory is searched for a record's base.
            source: name for error messages.

        Raises:
            NDFError: invalid data; :class:`~ndf_datasets.NDFBaseError` for a missing/wrong base.
        """
        return self.finish(self.read(data, shard, source))

    def read(self, data: bytes, shard: str | None = None, source: str = "<bytes>") -> DecodedField:
        """Parse and entropy-decode one member (the cheap half of :meth:`convert`)."""
        return read_field(bytes(data), self._base_arg(shard, source), source)

    def finish(self, field: DecodedField) -> torch.Tensor | DecodedField:
        """Render ``field`` (or return it as it is with ``render=False``)."""
        if not self.render:
            return field
        return render_fields([field], current_size(self.size), self.device)[0]

    def _base_arg(self, shard: str | None, source: str) -> SharedBase | BaseLookup:
        """The base, or a resolver :func:`read_field` calls with a record's hash."""
        if self.base is not None and not isinstance(self.base, str):
            return self.base
        if self.base is not None:
            return lambda base_hash: load_base_cached(self.base, **storage_options_for(self.base))
        locations = self.base_locations + ((shard_dir(shard),) if shard and not shard.startswith("pipe:") else ())
        return lambda base_hash: _find_base(base_hash, locations, source)

    def __repr__(self) -> str:
        kind = "ndf_decoder" if self.render else "ndf_read"
        return f"{kind}(size={self.size!r}, device={self.device!r}, extensions={' '.join(self.extensions)!r})"


def ndf_decoder(
    size: SizeArg = 32,
    device: str | torch.device = "cpu",
    base: SharedBase | str | os.PathLike | None = None,
    base_locations: Iterable[str | os.PathLike] | str | None = None,
    extensions: str = "ndf",
    allow_code: bool = False,
) -> NDFHandler:
    """A WebDataset handler decoding ``.ndf`` members to ``C x H x W`` float tensors in [0, 1].

    Use it in ``.decode(ndf_decoder(size=64), "pil")`` (or wrapped by :func:`ndf_samples`
    in ``.map``). Other extensions are left to the other handlers.

    Args:
        size: output size: ``None`` (original), an int (square) or ``(height, width)``; or a
            :class:`~ndf_datasets.integrations.sizes.SharedSize` to change it between epochs.
        device: where to render (keep ``"cpu"`` in DataLoader workers).
        base: the shared base for records: a SharedBase or its path/URL.
        base_locations: directories / URL prefixes searched for ``<hash>.ndfbase``.
        extensions: space-separated extensions to decode.
        allow_code: let WebDataset unpickle ``.pyd``/``.pickle``/``.pkl`` and ``torch.load``
            ``.pth`` members (default ``False``: they stay raw bytes; see :data:`CODE_EXTENSIONS`).

    Raises:
        ValueError: an invalid ``size``.

    Returns:
        A picklable handler.
    """
    return NDFHandler(size, device, base, base_locations, extensions, render=True, allow_code=allow_code)


def ndf_read(
    base: SharedBase | str | os.PathLike | None = None,
    base_locations: Iterable[str | os.PathLike] | str | None = None,
    extensions: str = "ndf",
    allow_code: bool = False,
) -> NDFHandler:
    """A WebDataset handler turning ``.ndf`` members into :class:`~ndf_datasets.DecodedField`.

    The cheap, CPU half of decoding (parse + entropy decode), for DataLoader workers; render
    whole batches later with :func:`ndf_batch_decode`.

    Args:
        base: the shared base for records: a SharedBase or its path/URL.
        base_locations: directories / URL prefixes searched for ``<hash>.ndfbase``.
        extensions: space-separated extensions to read.
        allow_code: as in :func:`ndf_decoder`.

    Returns:
        A picklable handler.
    """
    return NDFHandler(None, "cpu", base, base_locations, extensions, render=False, allow_code=allow_code)


class NDFSampleMap:
    """Applies an :class:`NDFHandler` to whole samples, knowing their shard and key.

    Build it with :func:`ndf_samples`; use it with ``.map(...)``.

    Args:
        handler: the handler to apply to each matching member.
    """

    def __init__(self, handler: NDFHandler):
        if not isinstance(handler, NDFHandler):
            raise TypeError(f"ndf_samples() wraps ndf_decoder()/ndf_read() handlers, got {type(handler).__name__}")
        self.handler = handler

    def __call__(self, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Decode the sample's ``.ndf`` members; other members are returned unchanged.

        A label stored in a ``.ndf`` record (CRC-protected) must equal the sample's ``cls``
        member: the ``.cls`` text has no checksum of its own, so this is what detects its
        corruption. A sample without ``cls`` (the compact layout: one member per sample)
        gets ``cls`` = the record's label, an int, so ``.to_tuple("ndf", "cls")`` works on
        every layout.

        Raises:
            NDFDecodeError: a member is not valid NDF data, or ``cls`` contradicts the label
                in the ``.ndf`` header (names shard, key, member and offset).
            NDFBaseError: a record's shared base is missing or wrong.
        """
        url, key = sample.get("__url__"), sample.get("__key__")
        out = dict(sample)
        for member, value in sample.items():
            if member.startswith("__") or not isinstance(value, (bytes, bytearray, memoryview)):
                continue
            if not self.handler.matches(member):
                continue
            try:
                field = self.handler.read(value, shard=url, source=f"{url}#{key}.{member}")
            except NDFBaseError:
                raise
            except NDFError as exc:
                raise NDFDecodeError(key, url, member, f"{type(exc).__name__}: {exc}", exc.offset) from exc
            _check_label(sample, field.label, key, url)
            if "cls" not in sample and field.label is not None:
                out["cls"] = field.label
            out[member] = self.handler.finish(field)
        return out

    def __repr__(self) -> str:
        return f"ndf_samples({self.handler!r})"


def _check_label(sample: Mapping[str, Any], label: int | None, key: str | None, url: str | None) -> None:
    """Raise :class:`NDFDecodeError` when the sample's ``cls`` contradicts the ``.ndf`` header's label."""
    cls = sample.get("cls")
    if label is None or cls is None:
        return
    if isinstance(cls, (bytes, bytearray, memoryview)):
        try:
            value = int(bytes(cls).decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise NDFDecodeError(key, url, "cls", f"not an integer label: {bytes(cls)[:20]!r}") from None
    elif isinstance(cls, int):
        value = cls
    else:
        return  # decoded by another stage into something else: not ours to judge
    if value != label:
        raise NDFDecodeError(
            key, url, "cls", f"label {value} contradicts the label {label} in the CRC-protected .ndf header"
        )


def ndf_samples(handler: NDFHandler | None = None) -> NDFSampleMap:
    """Use an NDF handler as a sample-level ``.map`` stage.

    Unlike ``.decode(handler)``, the stage sees each sample's ``__url__`` and ``__key__``:
    records also look for their base next to their shard, and failures raise
    :class:`NDFDecodeError` naming the shard, key and member. Pick the error policy with
    ``.map(ndf_samples(...), handler=...)``.

    Args:
        handler: :func:`ndf_decoder` (default: ``ndf_decoder()``) or :func:`ndf_read`.

    Raises:
        TypeError: ``handler`` is not an NDF handler.

    Returns:
        A picklable ``sample -> sample`` function.
    """
    return NDFSampleMap(ndf_decoder() if handler is None else handler)
