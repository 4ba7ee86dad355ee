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
     see :mod:`ndf_datasets.integrations.hf.builder`),
   * ``"ndf"`` with ``data_dir=`` (or ``data_files=``) naming NDF shards,
   * a local folder or fsspec URL that ``ndf convert`` wrote (an ``ndf_dataset.json``: any
     layout, tar or Parquet shards or per-image files) or that holds NDF shards
     (``<split>-NNNNNN.tar[.gz]`` / ``.parquet``) next to a ``<hash>.ndfbase``,
   * ``"parquet"`` with ``data_files=``: still ``datasets``' own Parquet builder, but the
     data files' folders are added as base locations first, so NDF records find their base,

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

The adapter's modules: :mod:`.feature` (:class:`NDFImage`), :mod:`.transforms` (batched
rendering, ranks), :mod:`.registration` (what :func:`register` does) and :mod:`.builder`
with :mod:`.raw` (the ``datasets`` builder and the named raw datasets); every name is
importable from this package.
"""

from __future__ import annotations

from .feature import NDFImage, add_base_location, skipped_rows
from .registration import (  # noqa: F401 (TensorPassthroughTorchFormatter: a name of the single-module hf.py)
    DATASET_NAMES,
    SUPPORTED_DATASETS_VERSIONS,
    TensorPassthroughTorchFormatter,
    register,
)
from .transforms import render_transform, split_for_rank

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



register()
