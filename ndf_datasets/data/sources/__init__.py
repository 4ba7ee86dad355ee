"""Image sources for conversion: raw dataset copies, ImageFolder trees and file lists.

A new kind of source is a reader returning a :class:`Source` of :class:`Split` objects
(:mod:`.base`); raw copies live in :mod:`.raw`, image files in :mod:`.folders`, and
:func:`open_source` (here) decides which one a location is.

:func:`open_source` recognises what a location holds and returns a :class:`Source`, a set of
named splits whose images can be read in slices (so a conversion holds one shard in memory,
not the dataset):

* **MNIST** IDX files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-*`` (also under ``MNIST/raw/``, as torchvision keeps them).
* **CIFAR-10, binary version**: ``cifar-10-batches-bin/`` with ``data_batch_1..5.bin``,
  ``test_batch.bin`` (records of 1 label byte + 3072 pixel bytes) and ``batches.meta.txt``.
* **CIFAR-10, python version** (what torchvision downloads): ``cifar-10-batches-py/`` with
  ``data_batch_1..5``, ``test_batch`` and ``batches.meta``. These are pickles; they are read
  with :class:`RestrictedUnpickler`, which rebuilds only uint8/int arrays through the
  checked functions of :mod:`~ndf_datasets.data.sources.unpickle` and refuses every other
  global, so a hostile file can not run code.
* an **ImageFolder** tree ``root/<class>/<image>`` (or ``root/<split>/<class>/<image>`` for
  the split names in :data:`SPLIT_NAMES`), locally or at any fsspec URL (``s3://...``).
* a **list of image files** (paths or URLs): one unlabelled ``train`` split.

Every reader checks sizes before allocating and raises :class:`SourceError` (a
``ValueError``) or ``FileNotFoundError`` naming the file and what is wrong. Nothing is ever
downloaded from the internet: locations are read as they are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ...codec import is_url
from .base import MAX_RAW_BYTES, ArraySplit, Source, SourceError, Split, _abs, _exists  # noqa: F401 (MAX_RAW_BYTES)
from .folders import (  # noqa: F401 (image_mode: a name of the single-module sources.py)
    IMAGE_EXTENSIONS,
    SPLIT_NAMES,
    FileSplit,
    _open_files,
    _open_image_folder,
    image_mode,
    load_image,
)
from .raw import (
    _RAW_READERS,
    CIFAR10_CLASSES,
    _open_raw,
    detect_kind,
    read_cifar10_bin,
    read_cifar10_py,
    read_mnist,
)
from .unpickle import RestrictedUnpickler, restricted_loads

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "SPLIT_NAMES",
    "ArraySplit",
    "FileSplit",
    "RestrictedUnpickler",
    "Source",
    "SourceError",
    "Split",
    "detect_kind",
    "load_image",
    "open_source",
    "read_cifar10_bin",
    "read_cifar10_py",
    "read_mnist",
    "restricted_loads",
]


_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def open_source(
    src: str | os.PathLike | Sequence[str | os.PathLike],
    storage_options: dict | None = None,
    *,
    kind: str | None = None,
    mode: str | None = None,
) -> Source:
    """Recognise and open an image source (see the module docstring for what is recognised).

    Args:
        src: a folder path or fsspec URL, or a list of image file paths/URLs.
        storage_options: fsspec options for URLs.
        kind: force a kind (``"mnist"``, ``"cifar10-bin"``, ``"cifar10-py"``, ``"imagefolder"``)
            instead of detecting it.
        mode: Pillow mode for image files (``"L"``, ``"RGB"``, ``"RGBA"``); default: the
            first image's (grey stays grey, alpha is kept).

    Raises:
        FileNotFoundError: ``src`` or a file the layout needs does not exist.
        SourceError: a malformed file (named in the message).
        ValueError: an unknown ``kind`` or ``mode``.

    Returns:
        The :class:`Source`.
    """
    options = dict(storage_options or {})
    if mode is not None and mode not in _MODES.values():
        raise ValueError(f"mode must be one of {sorted(_MODES.values())}, got {mode!r}")
    if not isinstance(src, (str, os.PathLike)):
        return _open_files([os.fspath(p) for p in src], options, mode)
    location = _abs(os.fspath(src))
    if not is_url(location):
        if os.path.isfile(location):
            return _open_files([location], options, mode)
        if not os.path.isdir(location):
            raise FileNotFoundError(f"{location}: no such folder or file")
    elif _exists(location, options):
        return _open_files([location], options, mode)
    kind = kind or detect_kind(location, options) or "imagefolder"
    if kind == "imagefolder":
        return _open_image_folder(location, options, mode)
    if kind not in _RAW_READERS:
        raise ValueError(f"unknown source kind {kind!r}; use one of {sorted(_RAW_READERS) + ['imagefolder']}")
    return _open_raw(kind, location, options)
