"""Dataset rows from every layout ``ndf convert`` writes: tar shards, Parquet shards, per-image files.

:mod:`.builder` lists what a location holds; this module turns each shard (or group of
files) into rows ``{"image": {"bytes", "path"}, "label", "key", "json"}``:

* **tar shards** (``.tar`` / ``.tar.gz``, :func:`ndf_datasets.data.shards.iter_shard`: tar
  headers, end-of-archive marker and gzip trailer verified). The label is the ``.cls`` member
  when there is one (checked against the label in the CRC-protected record), else, in the
  compact one-member layout, the record's own label.
* **Parquet shards** (:func:`ndf_datasets.data.parquet.iter_parquet`: every page's CRC, and
  the whole file's SHA-256 when the manifest records it).
* **files** (``<split>/<class>/<key>.ndf``): the label is the class folder, as for
  torchvision's ``ImageFolder``.

Labels are read out of a record only for records that can be verified on their own (v1
containers, CRC-32 over the whole file); a compact record (codec v2) is checked with its
base, which costs an entropy decode (see :func:`record_label`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ...codec import BaseLookup, NDFError, NDFFormatError, read_url
from ...codec import format as fmt
from ...codec import record_label as codec_record_label
from ...data import parquet, shards

__all__ = ["record_label", "tar_rows", "parquet_rows", "file_rows", "example"]



def record_label(blob: bytes, source: str, base: BaseLookup | None) -> int | None:
    """The label a record stores, verified: ``None`` when it has none or can not be read.

    A v1 container is checked by its own CRC-32; a compact record by its CRC with its base
    (``codec.record_label``: no entropy decoding). A record that does not verify gives
    ``None``: the image column's ``on_error`` policy then decides.
    """
    try:
        if blob[: len(fmt.MAGIC)] != fmt.MAGIC and base is None:
            return None
        return codec_record_label(blob, base, source)
    except NDFError:
        return None


def example(shard: str, key: str, parts: dict[str, bytes], base: BaseLookup | None = None) -> dict[str, Any]:
    """One dataset row from one WebDataset sample (``{extension: bytes}``).

    Raises:
        NDFFormatError: no ``.ndf`` member, a ``.cls`` that is not an integer, or one that
            contradicts the label in the CRC-protected record (``.cls`` has no checksum of
            its own, so a flipped digit would otherwise be a wrong label that looks valid).
    """
    where = f"{shard.rsplit('/', 1)[-1]}/{key}"
    if "ndf" not in parts:
        raise NDFFormatError(f"sample {key!r} has no .ndf member (it has {sorted(parts)})", source=shard)
    blob = parts["ndf"]
    stored = record_label(blob, f"{shard}#{key}.ndf", base)
    label = stored
    if "cls" in parts:
        try:
            label = int(parts["cls"].decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raise NDFFormatError(
                f"sample {key!r}: .cls is not an integer: {parts['cls'][:20]!r}", source=shard
            ) from None
        if stored is not None and stored != label:
            raise NDFFormatError(
                f"sample {key!r}: .cls says {label} but the CRC-protected .ndf header says {stored}", source=shard
            )
    meta = parts["json"].decode("utf-8", "replace") if "json" in parts else None
    return {"image": {"bytes": blob, "path": f"{where}.ndf"}, "label": label, "key": key, "json": meta}


def tar_rows(url: str, storage_options: dict, base: BaseLookup | None) -> Iterator[dict[str, Any]]:
    """The rows of a tar shard (``.tar`` or ``.tar.gz``), streaming."""
    for key, parts in shards.iter_shard(url, storage_options):
        yield example(url, key, parts, base)


def parquet_rows(url: str, storage_options: dict, sha256: str | None) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet shard, every page (and with ``sha256`` every byte) verified."""
    name = url.rsplit("/", 1)[-1]
    for s in parquet.iter_parquet(url, storage_options, sha256):
        meta = None if s.meta is None else _json(s.meta)
        yield {"image": {"bytes": s.ndf, "path": f"{name}/{s.key}.ndf"}, "label": s.label, "key": s.key, "json": meta}


def file_rows(files: Sequence[tuple[str, int | None]], storage_options: dict) -> Iterator[dict[str, Any]]:
    """The rows of ``(url, label)`` record files (the ``files`` layout); the key is the file's stem."""
    for url, label in files:
        blob = read_url(url, fmt.LIMITS["max_file_bytes"], **storage_options)
        key = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        yield {"image": {"bytes": blob, "path": url}, "label": label, "key": key, "json": None}


def _json(meta: dict) -> str:
    import json

    return json.dumps(meta, sort_keys=True)
