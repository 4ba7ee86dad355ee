"""HuggingFace ``datasets`` adapter: the :class:`NDFImage` feature and NDF datasets by name.

Supported ``datasets`` versions: ``>=5.0,<6`` (tested with 5.2.0). Importing this module calls
:func:`register`, which is idempotent and does three things:

1. **Feature type.** ``NDFImage`` is added to ``datasets.features.features._FEATURE_TYPES``
   through ``register_feature`` (public in the module, "experimental", not in ``__all__``),
   so ``Features.from_dict``, ``load_from_disk`` and cached ``dataset_info.json`` files
   rebuild it from its hidden ``_type="NDFImage"``. A process that loads such a dataset must
   import this module first (the pickled feature imports it by itself in DataLoader workers).
2. **Tensors through ``with_format("torch")``.** ``TorchFormatter._tensorize`` copies every
   value with ``torch.tensor(value)``; for a feature that already decodes to a tensor this
   costs a copy and a ``UserWarning`` per row (huggingface/datasets#7088, open). The entry
   ``"torch"`` of ``datasets.formatting._FORMAT_TYPES`` is replaced by a subclass that returns
   tensors as they are (other values: unchanged behaviour). Only done while the entry is
   still the stock ``TorchFormatter``.
3. **Names.** ``datasets`` 5.x has no loading scripts and no public hook to register a
   dataset name. ``load_dataset(path)`` asks ``datasets.load.dataset_module_factory(path)``
   for a ``DatasetModule`` (an importable builder module + hash + builder kwargs); this
   module wraps that function so that it answers, without any network access, for

   * ``"ndf_cifar10"`` and ``"ndf_mnist"`` (built from a raw copy or read from the NDF cache,
     see :mod:`ndf_datasets.integrations.hf_builder`),
   * ``"ndf"`` with ``data_dir=`` (or ``data_files=``) naming NDF WebDataset shards,
   * a local folder or fsspec URL that holds NDF shards (``<split>-NNNNNN.tar`` next to a
     ``<hash>.ndfbase`` or an ``ndf_dataset.json``),

   and defers to the original for everything else.

   Why not the packaged-module tables (``_PACKAGED_DATASETS_MODULES`` /
   ``_EXTENSION_TO_MODULE``)? For a packaged name ``PackagedDatasetModuleFactory`` resolves
   data files in ``data_dir`` or, without one, **in the current directory** (walking it and
   raising ``EmptyDatasetError`` when nothing matches), so ``load_dataset("ndf_cifar10")``
   could not work; and a folder of ``.tar`` shards is claimed by the ``webdataset`` module by
   extension. Fragility: the wrapper relies on ``load_dataset_builder`` looking the factory
   up as the module global ``datasets.load.dataset_module_factory`` and on the fields of
   ``datasets.load.DatasetModule`` (checked against 5.2.0). If a release changes them,
   by-name loading fails loudly (the names are unknown to ``datasets``: offline it raises
   ``ConnectionError``/``FileNotFoundError``) while the feature keeps working;
   ``tests/test_hf.py`` covers each path. ``datasets.inspect`` (config names) is wrapped too.

Example::

    import ndf_datasets.integrations.hf  # registers everything
    from datasets import load_dataset

    ds = load_dataset("ndf_cifar10", split="train").with_format("torch")
    x = ds[0]["image"]                   # float32 3 x 32 x 32 in [0, 1]
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import torch
from datasets.formatting.torch_formatter import TorchFormatter

from ..codec import format as fmt
from ..codec.bases import BASE_SUFFIX, load_base_cached, resolve_base
from ..codec.decode import DecodedField, read_field, render_fields, resolve_size
from ..codec.errors import NDFBaseError, NDFError
from ..codec.io import is_url, read_url
from ..codec.shared import SharedBase

if TYPE_CHECKING:
    from datasets.load import DatasetModule

__all__ = [
    "DATASET_NAMES",
    "SUPPORTED_DATASETS_VERSIONS",
    "NDFImage",
    "add_base_location",
    "register",
    "render_transform",
    "skipped_rows",
    "split_for_rank",
]

#: The ``datasets`` releases whose internals :func:`register` is written against.
SUPPORTED_DATASETS_VERSIONS = ">=5.0,<6"

#: Names ``load_dataset`` resolves to NDF builders, with their builder config names.
DATASET_NAMES: dict[str, str] = {"ndf_cifar10": "cifar10", "ndf_mnist": "mnist", "ndf": "shards"}

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
        from .s3 import storage_options_for

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


# ----------------------------------------------------------------------------- the feature


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
    """Refuse bytes that are not an NDF file at all (cheap; full checks happen on decode)."""
    if blob[: len(fmt.MAGIC)] != fmt.MAGIC:
        raise ValueError(f"{source}: not an .ndf file (it starts with {blob[:8]!r}); encode it with ndf.encode first")
    return blob


# ----------------------------------------------------------------------------- batched rendering


def render_transform(
    column: str = "image",
    size: int | tuple[int, int] | None = None,
    device: str | torch.device = "cpu",
    base: str | None = None,
) -> Callable[[dict], dict]:
    """A ``set_transform`` function that renders a whole batch in one forward pass.

    Use it on a column cast to ``NDFImage(decode=False)`` so ``datasets`` hands over the raw
    rows; the column becomes one ``B x C x H x W`` tensor on ``device``.

    Args:
        column: the NDFImage column.
        size: output size (required when the batch mixes original sizes).
        device: where to render.
        base: as in :class:`NDFImage`.

    Example::

        ds = ds.cast_column("image", NDFImage(decode=False, base=...))
        ds.set_transform(render_transform("image", size=32, device="cuda"))
        batch = ds[:256]["image"]            # 256 x 3 x 32 x 32 on the GPU
    """
    reader = NDFImage(decode=True, size=size, base=base)

    def transform(batch: dict) -> dict:
        values = batch[column]
        if not values:
            return batch
        if all(isinstance(v, torch.Tensor) for v in values):  # already decoded
            batch[column] = torch.stack(values).to(device)
        else:
            batch[column] = render_fields([reader.read_field(v) for v in values], size, device)
        return batch

    return transform


# ----------------------------------------------------------------------------- distributed epochs


def split_for_rank(
    dataset: Any, rank: int, world_size: int, epoch: int | None = None, format: str | None = None
) -> Any:
    """This rank's part of a (streaming) dataset for one epoch: exactly once over all ranks.

    ``datasets.distributed.split_dataset_by_node``, then ``with_format(format)``, then
    ``set_epoch(epoch)`` *last*: in datasets 5.2 both ``split_dataset_by_node`` and
    ``with_format`` return a dataset whose epoch is back at 0, so a ``set_epoch`` made
    before them is lost and every epoch silently repeats the first one's shuffle (apply any
    other transform before calling this, for the same reason). With ``n_shards`` a multiple
    of ``world_size`` each rank gets whole shards; DataLoader workers then split the rank's
    shards among themselves. The order is fixed by the dataset's shuffle seed and ``epoch``.

    Args:
        dataset: a ``datasets.IterableDataset`` (typically ``load_dataset(..., streaming=True)
            .shuffle(seed=..., buffer_size=...)``) or a map-style ``Dataset``.
        rank: this process's rank.
        world_size: number of ranks.
        epoch: the epoch (``None``: leave it as it is).
        format: ``with_format`` type, e.g. ``"torch"`` (``None``: unchanged).

    Example::

        ds = load_dataset("s3://bucket/cifar", split="train", streaming=True).shuffle(seed=1, buffer_size=1000)
        for epoch in range(epochs):
            part = split_for_rank(ds, rank, world, epoch, format="torch")
            loader = DataLoader(part, batch_size=64, num_workers=4)
    """
    from datasets.distributed import split_dataset_by_node

    part = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    if format is not None:
        part = part.with_format(format)
    if epoch is not None and hasattr(part, "set_epoch"):
        part.set_epoch(epoch)
    return part


# ----------------------------------------------------------------------------- registration


def _register_feature() -> None:
    from datasets.features import features as hf_features

    if hf_features._FEATURE_TYPES.get("NDFImage") is NDFImage:
        return
    with warnings.catch_warnings():  # "register_feature is experimental": known, hence the version pin
        warnings.simplefilter("ignore", UserWarning)
        hf_features.register_feature(NDFImage, "NDFImage")


class TensorPassthroughTorchFormatter(TorchFormatter):
    """``TorchFormatter`` that returns tensors as they are instead of copy-constructing them.

    Upstream ``_tensorize`` calls ``torch.tensor(value)`` on everything: for an already
    decoded tensor that is a copy plus a ``UserWarning`` per row (huggingface/datasets#7088).
    With ``torch_tensor_kwargs`` (``with_format("torch", dtype=...)``) upstream behaviour is kept.
    """

    def _tensorize(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and not self.torch_tensor_kwargs:
            return value
        return super()._tensorize(value)


def _register_torch_formatter() -> None:
    from datasets import formatting

    if formatting._FORMAT_TYPES.get("torch") is TorchFormatter:  # else: already ours, or someone else's
        formatting._FORMAT_TYPES["torch"] = TensorPassthroughTorchFormatter


@functools.lru_cache(maxsize=1)
def _module_hash() -> str:
    """Hash of the builder module's source: changes invalidate ``datasets``' cache, as for packaged modules."""
    from datasets.packaged_modules import _hash_python_lines

    from . import hf_builder

    return _hash_python_lines(inspect.getsource(hf_builder).splitlines())


_SHARD_NAME = re.compile(r"[A-Za-z0-9_]+-\d+\.tar$")


def _looks_like_ndf_shards(path: str, storage_options: dict) -> bool:
    """True when ``path`` is a folder / URL prefix with NDF shards (tar + base or manifest)."""
    if path.startswith("hf://") or not (is_url(path) or os.path.isdir(path)):
        return False
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **_storage_options(path, storage_options))
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except Exception:  # noqa: BLE001 - not listable: not ours, let datasets answer
        return False
    has_tar = any(_SHARD_NAME.fullmatch(n) for n in names)
    return has_tar and any(n.endswith(BASE_SUFFIX) or n == "ndf_dataset.json" for n in names)


def _ndf_dataset_module(path: str, kwargs: dict) -> DatasetModule | None:
    """The ``DatasetModule`` for an NDF name or shard location, or ``None`` for other paths."""
    from datasets.load import DatasetModule

    from . import hf_builder

    if path in DATASET_NAMES:
        builder_kwargs = {"dataset_name": path, "config_name": DATASET_NAMES[path]}
    else:
        download_config = kwargs.get("download_config")
        if not _looks_like_ndf_shards(path, getattr(download_config, "storage_options", None) or {}):
            return None
        name = re.sub(r"[^A-Za-z0-9_]+", "_", path.rstrip("/").rsplit("/", 1)[-1]) or "ndf"
        location = path if is_url(path) else os.path.abspath(path)
        builder_kwargs = {"dataset_name": name, "config_name": "shards", "data_dir": location}
    return DatasetModule(hf_builder.__name__, _module_hash(), builder_kwargs)


def _install_name_resolution() -> None:
    """Wrap ``dataset_module_factory`` where ``datasets`` looks it up (``load``; ``inspect`` for config names)."""
    import datasets.inspect
    from datasets import load

    original = load.dataset_module_factory
    if getattr(original, "_ndf_wrapped", False):
        return

    @functools.wraps(original)
    def dataset_module_factory(path: str, *args: Any, **kwargs: Any) -> DatasetModule:
        module = _ndf_dataset_module(path, kwargs)
        return module if module is not None else original(path, *args, **kwargs)

    dataset_module_factory._ndf_wrapped = True  # type: ignore[attr-defined]
    dataset_module_factory._ndf_original = original  # type: ignore[attr-defined]
    for module in (load, datasets.inspect):
        if getattr(module, "dataset_module_factory", None) is original:
            module.dataset_module_factory = dataset_module_factory


def _check_version() -> None:
    import datasets

    major = int(datasets.__version__.split(".")[0])
    if major != 5:
        warnings.warn(
            f"ndf_datasets.integrations.hf is written for datasets{SUPPORTED_DATASETS_VERSIONS}, found "
            f"{datasets.__version__}; by-name loading relies on datasets internals and may not work",
            RuntimeWarning,
            stacklevel=3,
        )


def register() -> None:
    """Register NDF with ``datasets`` (idempotent; run on import of this module).

    Registers the :class:`NDFImage` feature type, makes ``with_format("torch")`` pass decoded
    tensors through without copies, and makes ``load_dataset`` resolve ``"ndf_cifar10"``,
    ``"ndf_mnist"``, ``"ndf"`` and folders/URLs of NDF shards offline. See the module
    docstring for the internals this relies on.
    """
    _check_version()
    _register_feature()
    _register_torch_formatter()
    _install_name_resolution()


register()
