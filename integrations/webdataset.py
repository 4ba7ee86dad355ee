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
"""

from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import webdataset as wds
import webdataset.cache

import ndf_datasets as ndf
from ndf_datasets.codec import format as fmt
from ndf_datasets.codec.decode import DecodedField, read_field, render_fields, resolve_size
from ndf_datasets.codec.errors import NDFBaseError, NDFError
from ndf_datasets.codec.io import is_url
from ndf_datasets.data.tarcheck import VerifiedTarStream

from .s3 import register_gopen_schemes, storage_options_for

if TYPE_CHECKING:
    import torch

    from ndf_datasets.codec.shared import SharedBase

__all__ = [
    "CODE_EXTENSIONS",
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

Size = int | tuple[int, int] | None

#: Members whose WebDataset default decoders execute code (``pickle.loads``, ``torch.load``).
#: NDF handlers return these members' raw bytes instead (see the module docstring).
CODE_EXTENSIONS: tuple[str, ...] = ("pyd", "pickle", "pkl", "pth")

register_gopen_schemes()


# --------------------------------------------------------------------------- errors


class NDFDecodeError(NDFError):
    """A sample's ``.ndf`` member could not be decoded; raised ``from`` the NDFError saying why.

    Like WebDataset's ``DecodingError``, but with a message naming the shard, the sample, the
    member and (when known) the byte offset inside the member.

    Attributes:
        key: the sample's ``__key__``.
        url: the shard's ``__url__``.
        member: the member's extension (``"ndf"``; ``"cls"`` for a label that contradicts
            the ``.ndf`` header).
        reason: the underlying error's message.
        member_offset: byte offset of the damage inside the member, or ``None``.
    """

    def __init__(
        self, key: str | None, url: str | None, member: str = "ndf", reason: str = "", member_offset: int | None = None
    ):
        self.key = key
        self.url = url
        self.member = member
        self.reason = reason
        self.member_offset = member_offset
        where = f" at byte {member_offset} of the member" if member_offset is not None else ""
        message = f"can not decode member {key}.{member}{where} (sample {key!r})"
        super().__init__(f"{message}: {reason}" if reason else message, source=url or "<unknown shard>")

    def __reduce__(self):
        return (type(self), (self.key, self.url, self.member, self.reason, self.member_offset))


def _wds_decoding_error(exc: BaseException) -> bool:
    from webdataset.autodecode import DecodingError

    return isinstance(exc, DecodingError)


def _is_base_error(exc: BaseException) -> bool:
    return isinstance(exc, NDFBaseError) or (_wds_decoding_error(exc) and isinstance(exc.__cause__, NDFBaseError))


def _describe(exc: BaseException) -> str:
    if _wds_decoding_error(exc):
        return f"{exc.url}: sample {exc.key!r} member {exc.k!r}: {type(exc.__cause__).__name__}: {exc.__cause__}"
    return f"{type(exc).__name__}: {exc}"


class SkipCounter:
    """A WebDataset error handler that skips bad samples and counts them.

    Pass it as ``handler=`` of ``.map(ndf_samples(...))``, ``.decode(...)`` or
    ``wds.WebDataset(...)``. Shared-base errors (:class:`~ndf_datasets.NDFBaseError`) are
    re-raised: a missing base would otherwise silently skip every record.

    Counts are per process: in DataLoader workers each worker counts its own skips.

    Args:
        warn: also issue a :class:`UserWarning` per skipped sample.
        limit: re-raise once more than ``limit`` samples were skipped (``None``: no limit).
        keep: how many error descriptions to keep in :attr:`errors`.

    Attributes:
        count: samples skipped so far.
        errors: descriptions (shard, key, reason) of the first ``keep`` skipped samples.
    """

    def __init__(self, warn: bool = True, limit: int | None = None, keep: int = 100):
        self.warn = warn
        self.limit = limit
        self.keep = keep
        self.count = 0
        self.errors: list[str] = []

    def __call__(self, exc: BaseException) -> bool:
        """Record ``exc`` and return ``True`` (skip the sample), or re-raise it.

        Raises:
            NDFBaseError: (or WebDataset's wrapper of it) always re-raised.
            Exception: ``exc``, once more than ``limit`` samples were skipped.
        """
        if _is_base_error(exc):
            raise exc
        self.count += 1
        text = _describe(exc)
        if len(self.errors) < self.keep:
            self.errors.append(text)
        if self.warn:
            warnings.warn(f"skipping sample: {text}", stacklevel=2)
        if self.limit is not None and self.count > self.limit:
            raise exc
        return True

    def __repr__(self) -> str:
        return f"SkipCounter(count={self.count})"


# --------------------------------------------------------------------------- bases


def shard_dir(url: str) -> str:
    """The directory (or URL prefix) holding shard ``url``: where its shared base lives.

    Args:
        url: a shard path or URL, e.g. ``"s3://bucket/train/shard-000001.tar"``.

    Raises:
        ValueError: a ``pipe:`` URL, which has no directory.

    Returns:
        ``"s3://bucket/train"``; ``"."`` for a bare file name.
    """
    url = os.fspath(url)
    if url.startswith("pipe:"):
        raise ValueError(f"{url}: a pipe: URL has no directory; pass base= or base_locations=")
    head, sep, _ = url.rpartition("/")
    if not sep:
        return "."
    return head + "/" if head == "" or head.endswith("://") else head


def _cached_base(base_hash: bytes) -> SharedBase | None:
    try:
        return ndf.resolve_base(base_hash, [])  # only the per-process cache: no I/O
    except NDFBaseError:
        return None


def _find_base(base_hash: bytes, locations: Sequence[str], source: str) -> SharedBase:
    """The base with ``base_hash``: from this process's cache, else ``<location>/<hash>.ndfbase``."""
    base = _cached_base(base_hash)
    if base is not None:
        return base
    tried = []
    for loc in locations:
        candidate = _join(loc, ndf.base_filename(base_hash))
        tried.append(candidate)
        try:
            base = ndf.load_base_cached(candidate, **storage_options_for(candidate))
        except FileNotFoundError:
            continue
        if base.hash != base_hash:
            raise NDFBaseError(f"base file holds hash {base.hash.hex()}, not {base_hash.hex()}", source=candidate)
        return base
    where = f"looked for {tried}" if tried else "no base=, base_locations= or shard URL to look in"
    raise NDFBaseError(
        f"this record needs the shared base {base_hash.hex()}; {where}. Pass base=..., "
        "base_locations=[<shard dir>], or decode with .map(ndf_samples(...)) to look next to each shard",
        source=source,
    )


def _join(location: str, name: str) -> str:
    return location + name if location.endswith("/") else f"{location}/{name}"


def _as_locations(locations: Iterable[str | os.PathLike] | str | os.PathLike | None) -> tuple[str, ...]:
    if locations is None:
        return ()
    if isinstance(locations, (str, os.PathLike)):
        locations = [locations]
    return tuple(os.fspath(loc) for loc in locations)


# --------------------------------------------------------------------------- handlers


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
        size: output size: ``None`` (original), an int (square) or ``(height, width)``.
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
        size: Size = 32,
        device: str | torch.device = "cpu",
        base: SharedBase | str | os.PathLike | None = None,
        base_locations: Iterable[str | os.PathLike] | str | None = None,
        extensions: str = "ndf",
        render: bool = True,
        allow_code: bool = False,
    ):
        if size is not None:
            resolve_size(size, 1, 1)  # validate now, not in a worker
        self.size = tuple(size) if isinstance(size, list) else size
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
        return render_fields([field], self.size, self.device)[0]

    def _base_arg(self, shard: str | None, source: str) -> SharedBase | Callable[[bytes], SharedBase]:
        """The base, or a resolver :func:`read_field` calls with a record's hash."""
        if self.base is not None and not isinstance(self.base, str):
            return self.base
        if self.base is not None:
            return lambda base_hash: ndf.load_base_cached(self.base, **storage_options_for(self.base))
        locations = self.base_locations + ((shard_dir(shard),) if shard and not shard.startswith("pipe:") else ())
        return lambda base_hash: _find_base(base_hash, locations, source)

    def __repr__(self) -> str:
        kind = "ndf_decoder" if self.render else "ndf_read"
        return f"{kind}(size={self.size!r}, device={self.device!r}, extensions={' '.join(self.extensions)!r})"


def ndf_decoder(
    size: Size = 32,
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
        size: output size: ``None`` (original), an int (square) or ``(height, width)``.
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

        A label stored in a ``.ndf`` header (CRC-protected) must equal the sample's ``cls``
        member: the ``.cls`` text has no checksum of its own, so this is what detects its
        corruption.

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


# --------------------------------------------------------------------------- verified shards


class _VerifyingOpener:
    """Wraps WebDataset's shard-opening stage: every opened stream is a :class:`VerifiedTarStream`."""

    def __init__(self, inner: Callable[[Iterable[Any]], Iterable[dict]]):
        self.inner = inner

    def __call__(self, urls: Iterable[Any]) -> Iterable[dict]:
        for sample in self.inner(urls):
            sample["stream"] = VerifiedTarStream(sample["stream"], str(sample["url"]))
            yield sample


class NDFWebDataset(wds.WebDataset):
    """``webdataset.WebDataset`` that refuses corrupted and truncated shards instead of
    silently dropping their tail.

    Same arguments and fluid interface as ``wds.WebDataset``. WebDataset reads tar files with
    :mod:`tarfile`, which ends a shard quietly at a tar header whose checksum is wrong (after
    the first member) or at an end of file before the end-of-archive marker: every later
    sample is lost without an error. Here each shard stream goes through
    :class:`~ndf_datasets.tarcheck.VerifiedTarStream`, so both raise
    :class:`~ndf_datasets.NDFShardError` (shard URL, member, byte offset), handled by
    ``handler=`` like any other error: :class:`SkipCounter` skips the rest of the shard and
    counts it.

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
        raise RuntimeError("no shard-opening stage in this WebDataset pipeline; NDFWebDataset needs webdataset>=1.0,<1.1")


def epoch_dataset(
    urls: str | Sequence[str],
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: int = 0,
    handler: Callable[[BaseException], bool] = wds.reraise_exception,
) -> NDFWebDataset:
    """One epoch over ``urls`` in which every sample is read exactly once across all ranks
    and DataLoader workers, in an order fixed by ``(seed, epoch)``.

    The recipe, and why each step is needed:

    1. the shard list is expanded and permuted with ``Random(seed * 1000003 + epoch)``
       *before* it is split, so every rank computes the same permutation (WebDataset's own
       ``shardshuffle`` runs after the split and seeds from the clock unless told otherwise);
    2. it is split by rank (``RANK`` / ``WORLD_SIZE`` or an initialised
       ``torch.distributed`` group) and then by DataLoader worker: disjoint parts that
       cover every shard once (``wds.split_by_node``, ``wds.split_by_worker``);
    3. samples are optionally shuffled inside each worker with a buffer of ``shuffle``
       samples and a seed derived from ``(seed, epoch)``, created where it runs;
    4. shards are read through :class:`NDFWebDataset`, so a damaged shard is an error
       (or, with ``handler=SkipCounter()``, a counted skip), never a silent short epoch.

    No resampling, no repetition: an epoch ends when every part is consumed. With ``R``
    ranks and ``W`` workers, ranks receive equal numbers of samples only when every shard
    holds as many samples and the shard count is a multiple of ``R * W``. Build a new one per
    epoch (``epoch=`` changes the order); DataLoader workers get it by pickling, as usual.

    Args:
        urls: shard URLs, or one brace pattern (``"s3://b/train-{000000..000099}.tar"``).
        seed: the run's seed: the same seed and epoch give the same order.
        epoch: the epoch number.
        shuffle: sample shuffle buffer per worker (0: shard order only).
        handler: WebDataset error policy for reading shards.

    Returns:
        An :class:`NDFWebDataset`; add ``.map(ndf_samples(...))``, ``.to_tuple(...)``,
        ``.batched(...)`` as usual.

    Example::

        for epoch in range(epochs):
            ds = epoch_dataset(urls, seed=1, epoch=epoch).map(ndf_samples(ndf_decoder(32))).to_tuple("ndf", "cls")
            loader = wds.WebLoader(ds, batch_size=64, num_workers=4)
    """
    import random

    from webdataset.shardlists import expand_urls

    shards = list(expand_urls(urls)) if isinstance(urls, str) else [str(u) for u in urls]
    random.Random(seed * 1000003 + epoch).shuffle(shards)
    ds = NDFWebDataset(
        shards,
        shardshuffle=False,
        nodesplitter=wds.split_by_node,
        workersplitter=wds.split_by_worker,
        handler=handler,
        empty_check=False,
    )
    if shuffle > 0:
        ds = ds.shuffle(shuffle, seed=(seed * 1000003 + epoch) * 7919 + 1)
    return ds


# --------------------------------------------------------------------------- batches

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
        size: output size: ``None`` (original; all images then need one size), an int or ``(h, w)``.
        device: where to render, e.g. ``"cuda"``.

    Raises:
        ValueError: an invalid ``size`` (at construction).
    """

    def __init__(self, size: Size = 32, device: str | torch.device = "cpu"):
        if size is not None:
            resolve_size(size, 1, 1)
        self.size = tuple(size) if isinstance(size, list) else size
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
        return render_fields(fixed, self.size, self.device)

    def __repr__(self) -> str:
        return f"ndf_batch_decode(size={self.size!r}, device={self.device!r})"


def _is_field_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, DecodedField) for v in value)


def ndf_batch_decode(size: Size = 32, device: str | torch.device = "cpu") -> NDFBatchRender:
    """A map function for after ``.batched(n)``: renders each batch's fields in one pass.

    Pairs with :func:`ndf_read`; the pixels equal :func:`ndf_decoder`'s. Bases arriving in
    separate pickled copies (one per batch from each worker) are replaced by one object per
    hash, so their weights move to ``device`` once.

    Args:
        size: output size.
        device: where to render, e.g. ``"cuda"``.

    Raises:
        ValueError: an invalid ``size``.

    Returns:
        A picklable ``batch -> batch`` function.
    """
    return NDFBatchRender(size, device)


# --------------------------------------------------------------------------- writing


@dataclass
class ShardSet:
    """What :func:`write_shards` wrote.

    Attributes:
        urls: the shards, in order.
        base_url: where the shared base was written, or ``None``.
        count: number of samples.
    """

    urls: list[str]
    base_url: str | None
    count: int


def _sample_dict(sample: Mapping[str, Any], index: int, base: SharedBase | None) -> dict[str, Any]:
    key = str(sample.get("__key__", f"{index:08d}"))
    if not key or "." in key.rsplit("/", 1)[-1]:
        raise ValueError(f"sample {index}: key {key!r} must be non-empty and contain no '.' (it separates extensions)")
    blob = sample.get("ndf")
    if blob is None:
        raise ValueError(f"sample {key!r}: needs 'ndf' bytes (the encoded image)")
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise TypeError(f"sample {key!r}: 'ndf' must be bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    _check_blob(blob, base, f"sample {key!r}")
    out = {k: v for k, v in sample.items() if not k.startswith("__")}
    out["__key__"] = key
    out["ndf"] = blob
    if out.get("cls") is not None:
        out["cls"] = int(out["cls"])
    else:
        out.pop("cls", None)
    if out.get("json") is None:
        out.pop("json", None)
    return out


def _check_blob(blob: bytes, base: SharedBase | None, source: str) -> None:
    c = fmt.parse(blob, source)
    if c.kind == fmt.KIND_BASE:
        raise ndf.NDFFormatError("a shared base is not an image; pass it as base=", source=source)
    if c.kind == fmt.KIND_RECORD:
        if base is None:
            raise NDFBaseError(f"a record (base {c.base_hash.hex()}) needs base= to be written with it", source=source)
        base.check(c.base_hash, source)


def _parent(pattern: str) -> str:
    head, sep, _ = pattern.rpartition("/")
    return head if sep else "."


def _write_base(base: SharedBase, directory: str) -> str:
    url = _join(directory, ndf.base_filename(base.hash))
    if not is_url(url):
        base.save(url, overwrite=True)
        return url
    with ndf.open_url(url, "wb", **storage_options_for(url)) as f:
        f.write(base.to_bytes())
    return url


def write_shards(
    pattern: str,
    samples: Iterable[Mapping[str, Any]],
    maxcount: int = 10000,
    base: SharedBase | None = None,
    maxsize: float = 3e9,
) -> ShardSet:
    """Write samples to WebDataset shards (and the shared base next to them).

    Each sample is a mapping with ``"ndf"`` (the ``.ndf`` bytes), optional ``"cls"`` (int
    label), ``"json"`` (JSON-able metadata), ``"__key__"`` (default: the running index,
    ``"00000000"``...) and any other members WebDataset's writer can encode by extension.
    Every blob is validated; records must belong to ``base``.

    Args:
        pattern: shard path or URL with a ``%`` format for the shard number,
            e.g. ``"out/shard-%06d.tar"`` or ``"s3://bucket/train/shard-%06d.tar"``.
        samples: the samples, in order.
        maxcount: samples per shard at most.
        base: the shared base of the records; written as ``<dir>/<hash hex>.ndfbase``.
        maxsize: bytes per shard at most (approximately).

    Raises:
        ValueError: a pattern without ``%``, a bad key or a sample without ``ndf``.
        TypeError: an ``ndf`` value that is not bytes.
        NDFError: a blob that is not a valid image; :class:`~ndf_datasets.NDFBaseError` for
            a record without ``base`` or of another base.

    Returns:
        The shard URLs, the base's location and the sample count.
    """
    try:
        pattern % 0
    except TypeError:
        raise ValueError(f"pattern {pattern!r} needs a % format for the shard number, e.g. 'shard-%06d.tar'") from None
    if maxcount < 1:
        raise ValueError(f"maxcount must be at least 1, got {maxcount}")
    directory = _parent(pattern)
    local = directory[7:] if directory.startswith("file://") else None if is_url(directory) else directory
    if local is not None:
        os.makedirs(local, exist_ok=True)
    base_url = _write_base(base, directory) if base is not None else None
    urls: list[str] = []
    count = 0
    with wds.ShardWriter(pattern, maxcount=maxcount, maxsize=maxsize, verbose=0, post=urls.append) as sink:
        for index, sample in enumerate(samples):
            sink.write(_sample_dict(sample, index, base))
            count += 1
    return ShardSet(urls, base_url, count)
