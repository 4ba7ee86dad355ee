"""Registering NDF with ``datasets``: the feature type, tensor pass-through, and dataset names (see the package docstring)."""

from __future__ import annotations

import functools
import inspect
import os
import re
import warnings
from typing import TYPE_CHECKING, Any

import torch
from datasets.formatting.torch_formatter import TorchFormatter

from ...codec import BASE_SUFFIX, is_url
from .feature import NDFImage, _storage_options

if TYPE_CHECKING:
    from datasets.load import DatasetModule

__all__ = ["DATASET_NAMES", "SUPPORTED_DATASETS_VERSIONS", "TensorPassthroughTorchFormatter", "register"]

#: The ``datasets`` releases whose internals :func:`register` is written against.
SUPPORTED_DATASETS_VERSIONS = ">=5.0,<6"

#: Names ``load_dataset`` resolves to NDF builders, with their builder config names.
DATASET_NAMES: dict[str, str] = {"ndf_cifar10": "cifar10", "ndf_mnist": "mnist", "ndf": "shards"}


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

    from . import builder

    return _hash_python_lines(inspect.getsource(builder).splitlines())


_SHARD_NAME = re.compile(r"[A-Za-z0-9_]+-\d+\.(?:tar|tar\.gz|parquet)$")
_MANIFEST = "ndf_dataset.json"


def _looks_like_ndf_shards(path: str, storage_options: dict) -> bool:
    """True when ``path`` is a folder / URL prefix that ``ndf convert`` wrote (a manifest), or with
    NDF shards (``.tar``, ``.tar.gz``, ``.parquet``) next to a base."""
    if path.startswith("hf://") or not (is_url(path) or os.path.isdir(path)):
        return False
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **_storage_options(path, storage_options))
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except Exception:  # noqa: BLE001 - not listable: not ours, let datasets answer
        return False
    has_shard = any(_SHARD_NAME.fullmatch(n) for n in names)
    return _MANIFEST in names or (has_shard and any(n.endswith(BASE_SUFFIX) for n in names))


def _parquet_base_locations(kwargs: dict) -> None:
    """``load_dataset("parquet", data_files=...)``: the folders of the data files become base locations.

    ``datasets``' own Parquet builder rebuilds the ``NDFImage`` column from the schema
    metadata, but rows hold only bytes; a record then finds its base (``<hash>.ndfbase``, which
    ``ndf convert`` writes next to the shards) in those folders (:func:`add_base_location`).
    """
    from .feature import add_base_location

    files = kwargs.get("data_files")
    if files is None:
        return
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if isinstance(files, dict):
        files = [f for v in files.values() for f in ([v] if isinstance(v, (str, os.PathLike)) else v)]
    for f in files:
        f = os.fspath(f)
        if f.endswith(".parquet") or "*" in f:
            folder = f.rsplit("/", 1)[0] if "/" in f else "."
            add_base_location(folder if is_url(folder) else os.path.abspath(folder))


def _ndf_dataset_module(path: str, kwargs: dict) -> DatasetModule | None:
    """The ``DatasetModule`` for an NDF name or shard location, or ``None`` for other paths."""
    from datasets.load import DatasetModule

    from . import builder

    if path == "parquet":
        _parquet_base_locations(kwargs)
        return None
    if path in DATASET_NAMES:
        builder_kwargs = {"dataset_name": path, "config_name": DATASET_NAMES[path]}
    else:
        download_config = kwargs.get("download_config")
        if not _looks_like_ndf_shards(path, getattr(download_config, "storage_options", None) or {}):
            return None
        name = re.sub(r"[^A-Za-z0-9_]+", "_", path.rstrip("/").rsplit("/", 1)[-1]) or "ndf"
        location = path if is_url(path) else os.path.abspath(path)
        builder_kwargs = {"dataset_name": name, "config_name": "shards", "data_dir": location}
    return DatasetModule(builder.__name__, _module_hash(), builder_kwargs)


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
