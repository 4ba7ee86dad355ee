"""The :class:`NDFImage` feature: a ``datasets`` column of ``.ndf`` images, decoded through the one decode path.

Also where records find their shared base (:func:`add_base_location`), the fsspec options of
remote rows, and the count of rows skipped with ``on_error="skip"`` (:func:`skipped_rows`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import torch

from ...codec import (
    BASE_SUFFIX,
    DecodedField,
    NDFBaseError,
    NDFError,
    SharedBase,
    is_url,
    load_base_cached,
    read_field,
    read_url,
    render_fields,
    resolve_base,
    resolve_size,
)
from ...codec import format as fmt
from ...codec.record import is_compact

__all__ = ["NDFImage", "add_base_location", "skipped_rows"]

_base_locations: list[str] = []


def add_base_location(location: str | os.PathLike) -> None:
    """Add a folder or URL prefix where records' shared bases (``<hash>.ndfbase``) are looked up.

    :class:`NDFImage` features without ``base=`` search, in order: the folder of the row's
    file (rows stored by path), then these locations. Process-local.
    """
    location = os.fspath(location)
    if location not in _base_locations:
        _base_locations.append(location)


def _storage_options(url: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """fsspec options for ``url``: those configured with :mod:`ndf_datasets.integrations.s3`,
    overridden by ``given``.

    ``given`` may be flat (``{"key": ..., "client_kwargs": ...}``) or, as ``datasets`` passes
    them, keyed by protocol (``{"hf": {...}, "s3": {...}}``): entries for other protocols are
    dropped, the one for ``url``'s protocol is merged in.
    """
    if not is_url(url):
        return {}
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        from ..s3 import storage_options_for

        configured = storage_options_for(url)
    except ImportError:  # pragma: no cover - the s3 adapter is optional
        configured = {}
    given = given or {}
    protocols = set(fsspec.available_protocols())
    flat = {k: v for k, v in given.items() if k not in protocols}
    nested = given.get(protocol) if isinstance(given.get(protocol), dict) else {}
    return {**configured, **flat, **nested}


def _parent(path: str) -> str:
    """The folder (or URL prefix) holding ``path``."""
    if is_url(path):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(path))



_skipped = {"count": 0, "last": []}


def _count_skip(exc: NDFError) -> None:
    _skipped["count"] += 1
    _skipped["last"] = (_skipped["last"] + [str(exc)])[-100:]
    warnings.warn(f"skipped a corrupt NDF row: {exc}", stacklevel=3)


def skipped_rows() -> tuple[int, list[str]]:
    """Rows this process skipped with ``NDFImage(on_error="skip")``: the count, the last 100 errors.

    Counts are per process: with DataLoader workers, each worker counts its own rows.
    """
    return _skipped["count"], list(_skipped["last"])


@dataclass
class NDFImage:
    """A column of ``.ndf`` images (standalone fields or records of a shared base).

    Storage is ``struct{bytes: binary, path: string}`` like ``datasets.Image``: a row holds
    the file's bytes inline, or a path/URL read lazily (``s3://`` and other fsspec URLs go
    through :func:`ndf_datasets.read_url`). Decoding goes through the one decode path
    (:func:`ndf_datasets.read_field` + :func:`ndf_datasets.render_fields`).

    Input (``encode_example``): ``bytes``, a ``str`` path or URL, a ``pathlib.Path``, or a
    dict with ``bytes`` and/or ``path`` (the path then only names the row in errors).

    Output (``decode_example``): a ``float32`` tensor ``C x H x W`` in [0, 1], rendered at
    ``size``. With ``decode=False`` rows stay ``{"bytes": ..., "path": ...}`` dicts (see
    :func:`render_transform` to render a whole batch in one forward pass).

    ``Dataset.map``: a function that only adds columns keeps the column as NDF when it does
    not read it, when the dataset is formatted (``ds.with_format("torch").map(fn)``) or with
    ``input_columns=``. An unformatted ``map`` that reads the column hands the decoded tensor
    back to the writer; that is refused with a ``ValueError`` saying so (pixels can not be
    turned back into a field without fitting, and storing float pixels instead would
    silently make the dataset many times larger).

    Args:
        decode: decode rows to tensors (``False``: keep the raw dicts).
        size: output size: ``None`` (each image's original size), an int (square) or
            ``(height, width)``.
        base: where records find their shared base: a ``.ndfbase`` file (path or URL), or a
            folder / URL prefix holding ``<hash>.ndfbase``. ``None``: search the row's folder
            and :func:`add_base_location` locations. Credentials never go here: remote
            storage options come from :mod:`ndf_datasets.integrations.s3` or fsspec's config.
        on_error: ``"raise"`` (default) or ``"skip"``: a corrupt row then decodes to ``None``
            and is counted (:func:`skipped_rows`); a missing or wrong base always raises.
        id: an identifier, as in ``datasets`` features.

    Decoding raises :class:`~ndf_datasets.NDFError` for a corrupt or hostile row (the
    message names its path, or ``<bytes>``) and :class:`~ndf_datasets.NDFBaseError` for a
    record whose shared base is missing or is not the given one.

    Example::

        feats = Features({"image": NDFImage(size=64), "label": ClassLabel(num_classes=10)})
        ds = Dataset.from_dict({"image": blobs, "label": labels}, features=feats)
        ds.with_format("torch")[0]["image"].shape    # torch.Size([3, 64, 64])
    """

    decode: bool = True
    size: int | tuple[int, int] | None = None
    base: str | None = None
    on_error: str = "raise"
    id: str | None = field(default=None, repr=False)
    # Automatically constructed
    dtype: ClassVar[str] = "torch.Tensor"
    pa_type: ClassVar[Any] = pa.struct({"bytes": pa.binary(), "path": pa.string()})
    _type: str = field(default="NDFImage", init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.size, list):  # from JSON (dataset_info.json, Features.from_dict)
            self.size = tuple(self.size)
        if self.size is not None:
            resolve_size(self.size, 1, 1)  # raises ValueError on a bad size
        if self.base is not None:
            self.base = os.fspath(self.base)
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")

    def __call__(self) -> pa.DataType:
        return self.pa_type

    # ---- encode

    def encode_example(self, value: str | Path | bytes | bytearray | memoryview | dict) -> dict:
        """Encode one value into the Arrow storage ``{"bytes", "path"}``.

        Args:
            value: ``.ndf`` bytes, a path or URL (``str`` / ``Path``), or a dict with
                ``bytes`` and/or ``path``.

        Returns:
            ``{"bytes": bytes | None, "path": str | None}``.

        Raises:
            ValueError: bytes that are not an NDF file, or a dict with neither key set.
            TypeError: anything else (e.g. an image: encode it with ``ndf.encode`` first).
        """
        if isinstance(value, str):
            return {"bytes": None, "path": value}
        if isinstance(value, Path):
            return {"bytes": None, "path": str(value.absolute())}
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"bytes": _check_magic(bytes(value), "<bytes>"), "path": None}
        if isinstance(value, dict):
            blob, path = value.get("bytes"), value.get("path")
            if blob is not None:
                return {"bytes": _check_magic(bytes(blob), path or "<bytes>"), "path": path}
            if path is not None:
                return {"bytes": None, "path": os.fspath(path)}
            raise ValueError(f"an NDFImage value needs 'bytes' or 'path', but both are missing or None in {value!r}")
        raise TypeError(
            f"NDFImage stores .ndf files (bytes, a path or a {{'bytes', 'path'}} dict), not {type(value).__name__}; "
            "encode images first with ndf.encode(image) or ndf.encode_batch(images, base=...)"
        )

    # ---- decode

    def read_field(self, value: dict | str) -> DecodedField:
        """Read and entropy-decode one row (no rendering), resolving a record's shared base.

        Args:
            value: a stored row (``{"bytes", "path"}``) or a path / URL.

        Raises:
            NDFError: the row is not valid NDF (named by its path, or ``<bytes>``).
            NDFBaseError: a record whose shared base can not be found or does not match.
        """
        if isinstance(value, str):
            value = {"bytes": None, "path": value}
        blob, path = value.get("bytes"), value.get("path")
        if blob is None:
            if path is None:
                raise ValueError(f"an NDFImage row needs 'bytes' or 'path', but both are None in {value!r}")
            blob = read_url(path, **_storage_options(path))
            source, row_dir = path, _parent(path)
        else:
            source, row_dir = path or "<bytes>", None
        return read_field(blob, lambda base_hash: self._base_for(base_hash, source, row_dir), source)

    def decode_example(self, value: dict | str, token_per_repo_id: dict | None = None) -> torch.Tensor:
        """Decode one row to a ``float32`` ``C x H x W`` tensor in [0, 1] at ``self.size``.

        Args:
            value: ``{"bytes", "path"}`` (bytes win; the path then only names the row), or a
                path / URL. A tensor is returned as it is (decoding is idempotent).
            token_per_repo_id: unused (``datasets`` protocol); remote reads use fsspec.

        Raises:
            RuntimeError: the feature was created with ``decode=False``.
            NDFError, NDFBaseError: see :meth:`read_field`.
        """
        if not self.decode:
            raise RuntimeError("decoding is disabled for this feature; use NDFImage(decode=True)")
        if isinstance(value, torch.Tensor):
            return value
        try:
            return render_fields([self.read_field(value)], self.size)[0]
        except NDFError as exc:
            if self.on_error == "raise" or isinstance(exc, NDFBaseError):
                raise
            _count_skip(exc)
            return None

    def _base_for(self, base_hash: bytes, source: str, row_dir: str | None) -> SharedBase:
        """Find the shared base a record names (cached per process by hash)."""
        if self.base is not None and self.base.endswith(BASE_SUFFIX):
            try:
                return load_base_cached(self.base, **_storage_options(self.base))
            except FileNotFoundError:
                raise NDFBaseError(
                    f"the shared base file {self.base} given as NDFImage(base=...) does not exist "
                    f"(the record needs base {base_hash.hex()})",
                    source=source,
                ) from None
        locations = [loc for loc in (self.base, row_dir) if loc is not None] + list(_base_locations)
        try:
            return resolve_base(base_hash, locations, **(_storage_options(locations[0]) if locations else {}))
        except NDFBaseError as exc:
            raise NDFBaseError(
                f"this record needs the shared base {base_hash.hex()} ({exc}); keep <hash>{BASE_SUFFIX} next "
                "to the data, or pass NDFImage(base=<folder or .ndfbase file>)",
                source=source,
            ) from None

    # ---- datasets protocol

    def flatten(self) -> NDFImage | dict:
        """The feature itself when decoding, else its two storage columns."""
        from datasets import Value

        return self if self.decode else {"bytes": Value("binary"), "path": Value("string")}

    def cast_storage(self, storage: pa.Array) -> pa.StructArray:
        """Cast an Arrow array to the NDFImage storage type ``struct{bytes, path}``.

        Accepted types: ``string`` / ``large_string`` (paths), ``binary`` /
        ``large_binary`` (file bytes), and ``struct`` with ``bytes`` and/or ``path`` in any
        order.

        Raises:
            TypeError: any other Arrow type.
        """
        from datasets.table import array_cast

        if pa.types.is_large_string(storage.type):
            storage = storage.cast(pa.string())
        if pa.types.is_large_binary(storage.type):
            storage = array_cast(storage, pa.binary())
        n = len(storage)
        if pa.types.is_string(storage.type):
            parts = [pa.array([None] * n, type=pa.binary()), storage]
        elif pa.types.is_binary(storage.type):
            parts = [storage, pa.array([None] * n, type=pa.string())]
        elif pa.types.is_struct(storage.type):
            parts = [
                storage.field(name) if storage.type.get_field_index(name) >= 0 else pa.array([None] * n, type=typ)
                for name, typ in (("bytes", pa.binary()), ("path", pa.string()))
            ]
        elif (
            pa.types.is_list(storage.type)
            or pa.types.is_large_list(storage.type)
            or pa.types.is_fixed_size_list(storage.type)
        ):
            # Not a TypeError on purpose: datasets' writer would swallow it and silently store pixels instead.
            raise ValueError(
                f"NDFImage can not store decoded pixels (Arrow type {storage.type}); this happens when a function "
                "returns a decoded NDFImage column, e.g. Dataset.map(fn) reading ex['image']. Keep the column as NDF "
                "with ds.with_format('torch').map(fn) or map(fn, input_columns=[...]), drop it with remove_columns=, "
                "or pass features= with an Array3D column to store pixels"
            )
        else:
            raise TypeError(f"can not cast Arrow type {storage.type} to NDFImage storage (struct{{bytes, path}})")
        storage = pa.StructArray.from_arrays(parts, ["bytes", "path"], mask=storage.is_null())
        return array_cast(storage, self.pa_type)

    def embed_storage(
        self,
        storage: pa.StructArray,
        token_per_repo_id: dict | None = None,
        local_files: bool = True,
        remote_files: bool = True,
    ) -> pa.StructArray:
        """Inline the files that rows reference by path (``push_to_hub``, ``to_parquet`` ...).

        Args:
            storage: the column's Arrow storage.
            token_per_repo_id: unused; remote files are read through fsspec.
            local_files: read rows that name local files.
            remote_files: read rows that name URLs.

        Returns:
            The storage with ``bytes`` filled in and ``path`` reduced to the file name.
        """
        from datasets.table import array_cast

        def wanted(path: str | None) -> bool:
            return path is not None and (remote_files if is_url(path) else local_files)

        rows = storage.to_pylist()
        blobs = [
            None
            if row is None
            else (
                read_url(row["path"], **_storage_options(row["path"]))
                if row["bytes"] is None and wanted(row["path"])
                else row["bytes"]
            )
            for row in rows
        ]
        paths = [
            None if row is None else (row["path"].rsplit("/", 1)[-1] if wanted(row["path"]) else row["path"])
            for row in rows
        ]
        out = pa.StructArray.from_arrays(
            [pa.array(blobs, type=pa.binary()), pa.array(paths, type=pa.string())],
            ["bytes", "path"],
            mask=storage.is_null(),
        )
        return array_cast(out, self.pa_type)


def _check_magic(blob: bytes, source: str) -> bytes:
    """Refuse bytes that are not an NDF file at all (cheap; full checks happen on decode).

    A v1 container starts with the magic; a compact record (codec v2) with its tag byte.
    """
    if blob[: len(fmt.MAGIC)] != fmt.MAGIC and not is_compact(blob):
        raise ValueError(f"{source}: not an .ndf file (it starts with {blob[:8]!r}); encode it with ndf.encode first")
    return blob
