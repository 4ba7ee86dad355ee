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

The adapter's modules: :mod:`.folder` (the dataset, needs torchvision) and :mod:`.batch`
(deferred items, collation and batched rendering, torch only); every name is importable
from this package.
"""

from __future__ import annotations

from .batch import (  # noqa: F401 (every name of the single-module torchvision.py)
    DATASET_SIZE,
    ArchSpec,
    BaseArg,
    BaseRef,
    CollatedBatch,
    NDFBatch,
    NDFDecoder,
    NDFGroup,
    NDFItem,
    ndf_collate,
)
from .folder import (  # noqa: F401
    MAX_ERRORS_KEPT,
    NDF_EXTENSIONS,
    ON_ERROR,
    NDFImageFolder,
    logger,
    ndf_loader,
)

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
