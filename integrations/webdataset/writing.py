"""Writing WebDataset shards of ``.ndf`` samples (:func:`write_shards`), with the shared base next to them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import webdataset as wds

from ...codec import NDFBaseError, NDFFormatError, SharedBase, base_filename, is_url, open_url, record_label
from ...codec import format as fmt
from ...codec.record import is_compact
from ..s3 import storage_options_for
from .bases import _join

__all__ = ["ShardSet", "write_shards"]


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
    if is_compact(blob):  # a compact record: its CRC is checked with the base it is written with
        if base is None:
            raise NDFBaseError("a compact record needs base= to be written with it", source=source)
        record_label(blob, base, source)
        return
    c = fmt.parse(blob, source)
    if c.kind == fmt.KIND_BASE:
        raise NDFFormatError("a shared base is not an image; pass it as base=", source=source)
    if c.kind == fmt.KIND_RECORD:
        if base is None:
            raise NDFBaseError(f"a record (base {c.base_hash.hex()}) needs base= to be written with it", source=source)
        base.check(c.base_hash, source)


def _parent(pattern: str) -> str:
    head, sep, _ = pattern.rpartition("/")
    return head if sep else "."


def _write_base(base: SharedBase, directory: str) -> str:
    url = _join(directory, base_filename(base.hash))
    if not is_url(url):
        base.save(url, overwrite=True)
        return url
    with open_url(url, "wb", **storage_options_for(url)) as f:
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
