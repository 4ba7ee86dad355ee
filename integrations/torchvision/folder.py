"""The torchvision dataset: :class:`NDFImageFolder`, an ``ImageFolder`` of ``.ndf`` files (needs torchvision)."""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

try:
    from torchvision.datasets import DatasetFolder
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ndf_datasets.integrations.torchvision needs torchvision; install 'ndf-datasets[torchvision]'"
    ) from exc

from ...codec import (
    BaseLookup,
    DecodedField,
    SharedBase,
    Size,
    load_base_cached,
    read_field,
    read_fields,
    read_url,
    render_fields,
    resolve_size,
)
from ...codec.errors import NDFBaseError, NDFError
from ..sizes import SharedSize
from .batch import DATASET_SIZE, ArchSpec, BaseArg, BaseRef, NDFDecoder, NDFItem, _load_file, _resolve

__all__ = ["MAX_ERRORS_KEPT", "NDF_EXTENSIONS", "ON_ERROR", "NDFImageFolder", "logger", "ndf_loader"]

NDF_EXTENSIONS = (".ndf",)

#: ``on_error`` values accepted by :class:`NDFImageFolder`.
ON_ERROR = ("raise", "skip")

#: how many ``(path, message)`` pairs :attr:`NDFImageFolder.errors` keeps (the count is exact).
MAX_ERRORS_KEPT = 100

#: the adapter's logger (skipped files are logged here as warnings)
logger = logging.getLogger("ndf_datasets.integrations.torchvision")


def ndf_loader(path: str | os.PathLike) -> bytes:
    """The default loader: the raw bytes of one ``.ndf`` file (local path or fsspec URL).

    Args:
        path: the sample's path, as listed in ``samples``.

    Raises:
        NDFLimitError: the file is larger than ``LIMITS['max_file_bytes']``.
        OSError: the file can not be read.

    Returns:
        The file's bytes; the dataset parses and decodes them.
    """
    return read_url(path)


class NDFImageFolder(DatasetFolder):
    """An ``ImageFolder`` of ``.ndf`` neural-field images, decoded at any size::

        root/
        ├── <hash hex>.ndfbase      (only for records: the dataset's shared base)
        ├── cat
        │   ├── 000.ndf
        │   ├── 001.ndf
        │   └── ...
        │       └── 002.ndf
        └── dog
            ├── 123.ndf
            └── ...

    This class inherits from :class:`~torchvision.datasets.DatasetFolder`, so the same methods
    (``find_classes``, ``make_dataset``) can be overridden to customise the dataset.

    A file is a standalone field or a record of a shared base. A record names its base by
    content hash; the base is the ``base`` argument or, by default, ``root/<hash hex>.ndfbase``.
    Bases are loaded once per process and cached by hash (:func:`ndf_datasets.resolve_base`).

    **Deferred decoding.** With ``deferred=True``, ``ds[i]`` returns ``(NDFItem, target)``:
    the file is read and entropy-decoded (cheap, in the loader worker) but not rendered. Pass
    ``collate_fn=ndf_collate`` to the ``DataLoader`` and render each batch in one forward pass
    with :meth:`NDFBatch.decode` or ``ds.decoder()``. Pixels equal ``deferred=False``.

    **Progressive resizing.** :meth:`set_size` changes the output size between epochs, in
    this process and in every DataLoader worker (persistent ones too): train at 16, then 24,
    then 32 pixels from the same records without rebuilding the dataset or the loader. The
    size lives in a :class:`~ndf_datasets.integrations.sizes.SharedSize`; pass one as ``size=``
    to share it between datasets (train and validation).

    **Bad files.** With ``on_error="raise"`` (default) a corrupt or truncated file raises an
    :class:`~ndf_datasets.NDFError` naming its path. With ``on_error="skip"``, ``ds[i]``
    returns ``None`` for a file that can not be read or decoded (an ``NDFError`` other than
    :class:`~ndf_datasets.NDFBaseError`, or an ``OSError``), logs a warning and counts it in
    :attr:`error_count` / :attr:`errors`. ``len(ds)`` does not change: pass
    ``collate_fn=ndf_collate``, which drops the ``None`` samples, so a batch may hold fewer
    than ``batch_size`` samples; its ``skipped`` attribute counts the dropped ones. The
    dataset's counters are per process: with ``num_workers > 0`` they count inside each
    worker, so sum ``batch.skipped`` in the training loop instead. A missing, unreadable or
    wrong shared base is a setup error, not a bad sample: it always raises
    :class:`~ndf_datasets.NDFBaseError`.

    Args:
        root (str or ``pathlib.Path``): Root directory path.
        size: output size: an int (square), ``(height, width)``, or ``None`` (each image's
            original size); or a :class:`~ndf_datasets.integrations.sizes.SharedSize` (see
            :meth:`set_size`).
        transform (callable, optional): A function/transform that takes the decoded
            ``C x H x W`` float tensor and returns a transformed version. Not allowed with
            ``deferred=True`` (apply it to the decoded batch instead).
        target_transform (callable, optional): A function/transform that takes in the
            target and transforms it.
        loader (callable, optional): A function returning the bytes of a ``.ndf`` file given
            its path (default :func:`ndf_loader`).
        is_valid_file (callable, optional): A function that takes the path of a file and
            checks if it is a valid file; replaces the ``.ndf`` extension check.
        allow_empty (bool, optional): If True, empty folders are considered to be valid
            classes. An error is raised on empty folders if False (default).
        base: the shared base of the records: a :class:`~ndf_datasets.SharedBase`, a path to
            its file, or ``None`` to find it by hash in ``root``.
        device: where ``ds[i]`` renders (``deferred=False``). Keep ``"cpu"`` with workers;
            to decode on a GPU use ``deferred=True`` and :class:`NDFDecoder`.
        deferred (bool): return unrendered :class:`NDFItem` samples (see above).
        on_error (str): ``"raise"`` or ``"skip"`` (see above).

    Raises:
        ValueError: invalid ``size``, ``on_error``, or ``transform`` with ``deferred=True``.
        FileNotFoundError: no class folders, a class without ``.ndf`` files (unless
            ``allow_empty``), or a ``base`` path that does not exist.
        NDFError: the ``base`` file is not a valid shared base.

    Attributes:
        classes (list): List of the class names sorted alphabetically.
        class_to_idx (dict): Dict with items (class_name, class_index).
        samples (list): List of (sample path, class_index) tuples; ``imgs`` is the same list.
        targets (list): The class_index value for each image in the dataset.
        error_count (int): samples skipped in this process (``on_error="skip"``).
        errors (deque): the last :data:`MAX_ERRORS_KEPT` ``(path, message)`` pairs skipped.
    """

    def __init__(
        self,
        root: str | Path,
        size: Size = 32,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        loader: Callable[[str], bytes] | None = None,
        is_valid_file: Callable[[str], bool] | None = None,
        allow_empty: bool = False,
        base: BaseArg = None,
        device: str | torch.device = "cpu",
        deferred: bool = False,
        on_error: str = "raise",
    ) -> None:
        _check_options(size, on_error, transform, deferred)
        super().__init__(
            root,
            loader or ndf_loader,
            NDF_EXTENSIONS if is_valid_file is None else None,
            transform=transform,
            target_transform=target_transform,
            is_valid_file=is_valid_file,
            allow_empty=allow_empty,
        )
        self.imgs = self.samples
        self._size = size if isinstance(size, SharedSize) else SharedSize(size)
        self.device = torch.device(device)
        self.deferred = deferred
        self.on_error = on_error
        self.base = os.fspath(base) if isinstance(base, (str, os.PathLike)) else base
        if isinstance(self.base, str):
            load_base_cached(self.base)  # fail now on a missing or invalid base file
        self.error_count = 0
        self.errors: collections.deque[tuple[str, str]] = collections.deque(maxlen=MAX_ERRORS_KEPT)

    def __getitem__(self, index: int) -> tuple[Any, Any] | None:
        """
        Args:
            index (int): Index

        Raises:
            NDFError: the file is corrupt, truncated or needs a base that can not be found
                (the message names the path); with ``on_error="skip"`` only base errors.

        Returns:
            tuple: ``(image, target)`` with a ``C x H x W`` float32 image in [0, 1]
            (``deferred=False``) or ``(NDFItem, target)`` (``deferred=True``); ``None`` for
            a skipped sample.
        """
        path, target = self.samples[index]
        try:
            sample = self._read(path)
        except NDFBaseError:
            raise
        except (NDFError, OSError) as exc:
            if self.on_error == "raise":
                raise
            self._skip(path, exc)
            return None
        if self.transform is not None:
            sample = self.transform(sample)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return sample, target

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any] | None]:
        """The samples of one batch, decoded together: what a ``DataLoader`` worker calls.

        PyTorch's map-style fetcher calls ``__getitems__`` with a whole batch of indices when
        a dataset defines it, so each worker reads the batch's files, entropy-decodes their
        records in one :func:`~ndf_datasets.codec.read_fields` call (a learned base's
        networks run once per batch, not once per image) and renders them in one forward.
        The samples are the ones :meth:`__getitem__` returns (pixels equal up to float
        rounding of the batched forward). When anything in the batch fails, the batch is
        read again item by item, so errors and ``on_error="skip"`` behave exactly as there;
        a subclass that overrides ``__getitem__`` is read item by item through it.
        """
        indices = list(indices)
        if len(indices) < 2 or type(self).__getitem__ is not NDFImageFolder.__getitem__:
            return [self[i] for i in indices]  # a subclass's own __getitem__ is always honoured
        paths = [self.samples[i][0] for i in indices]
        try:
            blobs = [self.loader(p) for p in paths]
            fields = read_fields(blobs, self._base_arg(paths[0]), paths)  # a base error names the first file
            if self.deferred:
                images: list[Any] = [self._item(f, p) for f, p in zip(fields, paths)]
            else:
                images = list(render_fields(fields, self.size, self.device))
        except (NDFError, OSError, ValueError):
            return [self[i] for i in indices]
        out: list[tuple[Any, Any] | None] = []
        for image, i in zip(images, indices):
            target = self.samples[i][1]
            if self.transform is not None:
                image = self.transform(image)
            if self.target_transform is not None:
                target = self.target_transform(target)
            out.append((image, target))
        return out

    @property
    def size(self) -> Size:
        """The output size samples are decoded at now (see :meth:`set_size`)."""
        return self._size.get()

    @size.setter
    def size(self, size: Size) -> None:
        self.set_size(size)

    def set_size(self, size: Size) -> None:
        """Decode every sample read from now on at ``size``, here and in every DataLoader worker.

        Progressive resizing: the dataset and its loader stay as they are (persistent workers
        included: the size is in shared memory). Call it between epochs; batches a worker
        had already prefetched keep the old size. Deferred batches render at the size their
        items were read for, so ``decoder()`` follows too.

        Args:
            size: an int (square), ``(height, width)`` or ``None`` (original size).

        Raises:
            ValueError: an invalid size.
        """
        self._size.set(tuple(size) if isinstance(size, list) else size)

    def decoder(self, size: Size = DATASET_SIZE) -> NDFDecoder:
        """An :class:`NDFDecoder` for this dataset's deferred batches: its base, and by default the size each
        batch was read at (the dataset's size then: it follows :meth:`set_size`)."""
        return NDFDecoder(size, base=self.base)

    def extra_repr(self) -> str:
        base = self.base if not isinstance(self.base, SharedBase) else f"<SharedBase {self.base.hash.hex()}>"
        return "\n".join(
            [f"Size: {self.size}", f"Deferred: {self.deferred}", f"On error: {self.on_error}", f"Base: {base}"]
        )

    # ------------------------------------------------------------------ helpers

    def _read(self, path: str) -> torch.Tensor | NDFItem:
        blob = self.loader(path)
        field = read_field(blob, self._base_arg(path), source=path)
        if self.deferred:
            return self._item(field, path)
        return render_fields([field], self.size, self.device)[0]

    def _base_arg(self, path: str) -> SharedBase | BaseLookup:
        """What :func:`read_field` needs to find a record's base: the base itself, or a resolver
        called with the record's hash (only for records; bases load once per process)."""
        if isinstance(self.base, SharedBase):
            return self.base
        if isinstance(self.base, str):
            return lambda base_hash: _load_file(self.base, path)
        return lambda base_hash: _resolve(base_hash, [os.fspath(self.root)], path)

    def _base_ref(self, base: SharedBase) -> BaseRef:
        if isinstance(self.base, str):
            return BaseRef(base.hash, file=self.base)
        return BaseRef(base.hash, dirs=(os.fspath(self.root),))

    def _item(self, f: DecodedField, path: str) -> NDFItem:
        ref = None if f.base is None else self._base_ref(f.base)
        return NDFItem(f.latents, f.weights, ArchSpec.of(f), ref, path, self.size)

    def _skip(self, path: str, exc: Exception) -> None:
        self.error_count += 1
        self.errors.append((path, str(exc)))
        logger.warning("skipping %s: %s", path, exc)


def _check_options(size: Size | SharedSize, on_error: str, transform: Callable | None, deferred: bool) -> None:
    if not isinstance(size, SharedSize):
        resolve_size(size, 1, 1)
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if deferred and transform is not None:
        raise ValueError(
            "transform= needs pixels, which deferred=True produces only after collation; "
            "apply it to the decoded batch, e.g. nn.Sequential(ds.decoder(), transform)"
        )
