"""Parquet shards of ``.ndf`` samples: HF ``datasets``' native format, with the ``NDFImage`` feature in the schema.

A Parquet shard (``<split>-NNNNNN.parquet``, what ``ndf convert --format parquet`` writes) is
what ``Dataset.push_to_hub`` writes and the Hub viewer shows: one row per image, columns

=========  ============================  ==============================================
``image``  ``struct{bytes, path}``        the record (``path`` null), ``NDFImage`` storage
``label``  ``int64`` (null: unlabelled)   ``ClassLabel`` with the class names
``key``    ``string``                    the sample key (``"000123"``, the image's index)
``json``   ``string``, only when asked    the sample's metadata, JSON
=========  ============================  ==============================================

The schema metadata holds the ``huggingface`` entry ``datasets`` reads its features from, so
``load_dataset("parquet", data_files=...)`` rebuilds the ``NDFImage`` column (the package
must be importable: ``import ndf_datasets``), plus an ``ndf`` entry (the base's hash).

**Integrity.** Every data page carries a CRC-32 (``write_page_checksum``) that
:func:`read_parquet` verifies; errors name the shard, the row group, the column and its byte
range. Parquet has no checksum over its footer (schema, statistics, metadata), so a shard
whose SHA-256 is known (the manifest records it) is also checked whole: then every byte is
verified. The records carry their own CRC either way. Reading never executes anything.

The bytes are reproducible (fixed writer settings, no timestamps): a resumed conversion
produces the same files. Needs ``pyarrow`` (installed with ``datasets``: ``pip install
ndf-datasets[hf]``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

from ..codec import NDFFormatError, NDFShardError, read_url
from .shards import Sample

__all__ = ["hf_features", "parquet_bytes", "read_parquet", "iter_parquet", "ROW_GROUP", "PARQUET_SUFFIX"]

PARQUET_SUFFIX = ".parquet"
#: rows per row group: the unit ``datasets`` streams and errors are located in
ROW_GROUP = 1000
#: the largest Parquet shard read into memory
MAX_PARQUET_BYTES = 1 << 31
#: the Arrow type of each column (``json`` only when asked for)
_TYPES = {"image": "struct<bytes: binary, path: string>", "label": "int64", "key": "string", "json": "string"}


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the hf extra
        raise ImportError("Parquet shards need pyarrow: pip install 'ndf-datasets[hf]'") from None
    return pa, pq


def hf_features(classes: Sequence[str], with_json: bool = False) -> dict[str, Any]:
    """The ``datasets`` features of a shard, as ``Features.to_dict()`` writes them (no ``datasets`` import)."""
    label = {"names": list(classes), "_type": "ClassLabel"} if classes else {"dtype": "int64", "_type": "Value"}
    features: dict[str, Any] = {"image": {"_type": "NDFImage"}, "label": label, "key": {"dtype": "string", "_type": "Value"}}
    if with_json:
        features["json"] = {"dtype": "string", "_type": "Value"}
    return features


def parquet_bytes(
    samples: Sequence[Sample], classes: Sequence[str], members: Sequence[str] = ("ndf",), compress: bool = True,
    base_hash: str | None = None,
) -> bytes:  # fmt: skip
    """The bytes of a Parquet shard holding ``samples`` (see the module docstring).

    Args:
        samples: the samples, in order (their ``label`` and, with ``"json"`` in ``members``, ``meta``).
        classes: class names, for the ``ClassLabel`` feature (empty: plain ``int64`` labels).
        members: ``"json"`` adds the metadata column; ``label`` and ``key`` are always there.
        compress: zstd pages (``False``: uncompressed).
        base_hash: hex hash of the records' base, recorded in the ``ndf`` metadata entry.
    """
    pa, pq = _pyarrow()
    with_json = "json" in members
    columns = {
        "image": pa.array([{"bytes": bytes(s.ndf), "path": None} for s in samples], pa.struct({"bytes": pa.binary(), "path": pa.string()})),
        "label": pa.array([s.label for s in samples], pa.int64()),
        "key": pa.array([s.key for s in samples], pa.string()),
    }  # fmt: skip
    if with_json:
        columns["json"] = pa.array([None if s.meta is None else json.dumps(s.meta, sort_keys=True) for s in samples], pa.string())
    features = {"info": {"features": hf_features(classes, with_json)}}
    meta = {b"huggingface": json.dumps(features, sort_keys=True).encode(), b"ndf": json.dumps({"base": base_hash}).encode()}
    table = pa.table(columns).replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(
        table, buf, row_group_size=ROW_GROUP, compression="zstd" if compress else "none", write_page_checksum=True,
        write_statistics=["label", "key"],
    )  # fmt: skip
    return buf.getvalue()


def read_parquet(data: bytes, source: str, sha256: str | None = None) -> Iterator[Sample]:
    """The samples of a Parquet shard held in memory, every data page's CRC verified.

    Args:
        data: the shard's bytes.
        source: the shard's path or URL, for error messages.
        sha256: the shard's expected SHA-256 (hex), when known (the manifest records it):
            then the whole file, footer included, is checked first.

    Raises:
        NDFShardError: a SHA-256 mismatch, a page whose CRC fails, or a file pyarrow can not
            read (the message names the row group, the column and its byte range).
        NDFFormatError: a file that is not an NDF Parquet shard (no ``image`` column ...).

    Yields:
        :class:`~ndf_datasets.data.shards.Sample` per row (``meta`` from the ``json`` column).
    """
    pa, pq = _pyarrow()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        where = _damaged_page(data, source)
        raise NDFShardError(
            f"SHA-256 of the shard differs from the manifest's ({where or 'no data page is damaged: the footer changed'})",
            source=source,
            offset=0,
        )
    try:
        f = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
        schema = f.schema_arrow
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a damaged footer
        raise NDFShardError(
            f"not a readable Parquet shard (its footer is damaged?): {type(exc).__name__}: {str(exc).strip()[:200]}",
            source=source,
            offset=max(0, len(data) - 8),
        ) from None
    names = schema.names
    types = {name: str(schema.field(name).type) for name in names}
    want = {k: v for k, v in _TYPES.items() if k in names or k in ("image", "key")}
    if {k: types.get(k) for k in want} != want:
        raise NDFFormatError(f"not an NDF Parquet shard: its columns are {types}, expected {want}", source=source)
    for g in range(f.num_row_groups):
        table = _row_group(f, g, names, source)
        images = table.column("image").to_pylist()
        labels = table.column("label").to_pylist() if "label" in names else [None] * len(images)
        keys = table.column("key").to_pylist()
        metas = table.column("json").to_pylist() if "json" in names else [None] * len(images)
        for image, label, key, meta in zip(images, labels, keys, metas):
            if image is None or image.get("bytes") is None or key is None:
                raise NDFFormatError(f"row {key!r} of row group {g} has no record bytes or no key", source=source)
            yield Sample(key, image["bytes"], label, _meta(meta, key, source))


def iter_parquet(url: str, storage_options: dict | None = None, sha256: str | None = None) -> Iterator[Sample]:
    """:func:`read_parquet` of the shard at ``url`` (a local path or fsspec URL; read whole)."""
    data = read_url(url, MAX_PARQUET_BYTES, **(storage_options or {}))
    yield from read_parquet(data, url, sha256)


def _meta(text: str | None, key: str, source: str) -> dict | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise NDFFormatError(f"row {key!r}: the json column is not JSON: {text[:40]!r}", source=source) from None


def _row_group(f: Any, g: int, names: Sequence[str], source: str) -> Any:
    """Row group ``g``, read column by column so an error names the column and its bytes."""
    pa, _ = _pyarrow()
    parts = {}
    for c, name in enumerate(names):
        try:
            parts[name] = f.read_row_group(g, columns=[name]).column(0)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for damaged pages
            start, end = _column_bytes(f, g, name)
            raise NDFShardError(
                f"row group {g}, column {name!r} (bytes {start}..{end}) is damaged: "
                f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}",
                source=source,
                offset=start,
            ) from None
    try:
        return pa.table(parts)
    except Exception as exc:  # noqa: BLE001 - columns of different lengths: a damaged footer
        raise NDFShardError(f"row group {g} is damaged: {str(exc)[:200]}", source=source, offset=0) from None


def _column_bytes(f: Any, g: int, name: str) -> tuple[int, int]:
    """The byte range of column ``name``'s chunks in row group ``g`` (``(0, 0)`` when the footer is unreadable)."""
    try:
        md = f.metadata.row_group(g)
        chunks = [md.column(c) for c in range(md.num_columns) if md.column(c).path_in_schema.split(".")[0] == name]
        starts = [col.dictionary_page_offset or col.data_page_offset for col in chunks]
        return min(starts), max(s + col.total_compressed_size for s, col in zip(starts, chunks))
    except Exception:  # noqa: BLE001 - the footer itself is damaged
        return 0, 0


def _damaged_page(data: bytes, source: str) -> str | None:
    """Where the page checksums locate the damage, if they do."""
    try:
        for _ in read_parquet(data, source):
            pass
    except (NDFShardError, NDFFormatError) as exc:
        return exc.message
    return None
