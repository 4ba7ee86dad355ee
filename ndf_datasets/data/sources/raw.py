"""Official raw copies: MNIST IDX files and the CIFAR-10 binary and python versions.

* **MNIST** IDX files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-*`` (also under ``MNIST/raw/``, as torchvision keeps them).
* **CIFAR-10, binary version**: ``cifar-10-batches-bin/`` with ``data_batch_1..5.bin``,
  ``test_batch.bin`` (records of 1 label byte + 3072 pixel bytes) and ``batches.meta.txt``.
* **CIFAR-10, python version**: ``cifar-10-batches-py/`` (pickles, read with
  :func:`~ndf_datasets.data.sources.unpickle.restricted_loads`).

Every reader checks sizes before allocating and raises :class:`SourceError` or
``FileNotFoundError`` naming the file and what is wrong.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import ArraySplit, Source, SourceError, Split, _first, _join, _read
from .unpickle import restricted_loads

__all__ = ["CIFAR10_CLASSES", "detect_kind", "read_cifar10_bin", "read_cifar10_py", "read_mnist"]

#: the CIFAR-10 class names, in label order (used when ``batches.meta*`` is absent)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ----------------------------------------------------------------------------- MNIST


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_LAYOUT = "<dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also <dir>/MNIST/raw/)"


def _mnist_candidates(location: str, stem: str) -> list[str]:
    return [_join(location, f"{sub}{stem}{ext}") for sub in ("", "MNIST/raw/") for ext in (".gz", "")]


def _read_idx(location: str, stem: str, magic: int, storage_options: dict) -> tuple[np.ndarray, str]:
    """One IDX file (gzipped or not) as a uint8 array of its declared shape."""
    candidates = _mnist_candidates(location, stem)
    path = _first(candidates, storage_options)
    if path is None:
        raise FileNotFoundError(f"no MNIST {stem} found; looked for {candidates}. Expected layout: {_MNIST_LAYOUT}")
    data = _read(path, storage_options)
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim:
        raise SourceError(f"{path}: {len(data)} bytes is too short for an IDX header")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise SourceError(f"{path}: IDX magic is {found:#010x}, expected {magic:#010x} (uint8, {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape, dtype=np.int64)):
        raise SourceError(f"{path}: declares shape {shape} ({int(np.prod(shape))} bytes) but holds {len(body)} bytes")
    return np.frombuffer(body, np.uint8).reshape(shape), path


def read_mnist(location: str, split: str, storage_options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a split of MNIST from its IDX files (``.gz`` or uncompressed).

    Args:
        location: the folder (or URL) holding ``train-images-idx3-ubyte.gz`` etc. (or ``MNIST/raw/``).
        split: ``"train"`` or ``"test"`` (the ``t10k`` files).
        storage_options: fsspec options for URLs.

    Raises:
        FileNotFoundError: a file is missing (the message gives the layout).
        SourceError: wrong magic, a truncated file, or image and label counts that differ.

    Returns:
        ``N x 28 x 28 x 1`` uint8 images and ``N`` int64 labels.
    """
    options = storage_options or {}
    image_stem, label_stem = _MNIST_FILES[split]
    images, image_path = _read_idx(location, image_stem, 0x803, options)
    labels, label_path = _read_idx(location, label_stem, 0x801, options)
    if len(images) != len(labels):
        raise SourceError(f"{image_path}: {len(images)} images but {len(labels)} labels")
    if len(labels) and int(labels.max()) > 9:
        raise SourceError(f"{label_path}: label {int(labels.max())} outside 0..9")
    return images[..., None].copy(), labels.astype(np.int64)


# ----------------------------------------------------------------------------- CIFAR-10, binary


_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_RECORD = 1 + _CIFAR_PIXELS
_CIFAR_BIN_LAYOUT = "<dir>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (the official binary version)"
_CIFAR_PY_LAYOUT = "<dir>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (the official python version)"


def _cifar_names(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _cifar_file(location: str, sub: str, name: str, layout: str, storage_options: dict) -> str:
    candidates = [_join(location, f"{sub}/{name}"), _join(location, name)]
    path = _first(candidates, storage_options)
    if path is None:
        raise FileNotFoundError(f"no CIFAR-10 {name} found; looked for {candidates}. Expected layout: {layout}")
    return path


def _check_labels(labels: np.ndarray, path: str) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise SourceError(f"{path}: labels outside 0..9 (found {int(labels.min())}..{int(labels.max())})")


def read_cifar10_bin(location: str, split: str, storage_options: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a split of the official CIFAR-10 binary version.

    Each record is 1 label byte and 3072 pixel bytes (R, G, B planes of 32 x 32).

    Args:
        location: the folder (or URL) holding ``cifar-10-batches-bin/`` (or that folder itself).
        split: ``"train"`` (``data_batch_1..5.bin``) or ``"test"`` (``test_batch.bin``).
        storage_options: fsspec options for URLs.

    Raises:
        FileNotFoundError: a batch file is missing (the message gives the layout).
        SourceError: a file whose size is not a whole number of records, or a bad label.

    Returns:
        ``N x 32 x 32 x 3`` uint8 images and ``N`` int64 labels.
    """
    options = storage_options or {}
    images, labels = [], []
    for name in _cifar_names(split):
        path = _cifar_file(location, "cifar-10-batches-bin", f"{name}.bin", _CIFAR_BIN_LAYOUT, options)
        data = _read(path, options)
        if not data or len(data) % _CIFAR_RECORD:
            raise SourceError(
                f"{path}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records"
            )
        rec = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
        _check_labels(rec[:, 0], path)
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _get(d: dict, key: str) -> Any:
    return d.get(key.encode("ascii"), d.get(key))


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def read_cifar10_py(
    location: str, split: str, storage_options: dict | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a split of the CIFAR-10 python version (pickled batches) without executing anything.

    Args:
        location: the folder (or URL) holding ``cifar-10-batches-py/`` (or that folder itself).
        split: ``"train"`` (``data_batch_1..5``) or ``"test"`` (``test_batch``).
        storage_options: fsspec options for URLs.

    Raises:
        FileNotFoundError: a batch file is missing.
        SourceError: a malformed batch or one with a disallowed global (see :class:`RestrictedUnpickler`).

    Returns:
        ``N x 32 x 32 x 3`` uint8 images, ``N`` int64 labels and the ``N`` file names.
    """
    options = storage_options or {}
    images, labels, names = [], [], []
    for name in _cifar_names(split):
        path = _cifar_file(location, "cifar-10-batches-py", name, _CIFAR_PY_LAYOUT, options)
        batch = restricted_loads(_read(path, options), path)
        if not isinstance(batch, dict):
            raise SourceError(f"{path}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
        data, lab = _get(batch, "data"), _get(batch, "labels")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != _CIFAR_PIXELS
        ):
            got = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise SourceError(f"{path}: b'data' must be a uint8 array N x {_CIFAR_PIXELS}, found {got}")
        if not isinstance(lab, (list, np.ndarray)) or len(lab) != len(data):
            raise SourceError(f"{path}: b'labels' must list one label per image ({len(data)})")
        if not all(isinstance(v, (int, np.integer)) for v in lab):
            raise SourceError(f"{path}: b'labels' must be integers")
        lab = np.asarray(lab, dtype=np.int64)
        _check_labels(lab, path)
        files = _get(batch, "filenames")
        files = [_text(f) for f in files] if isinstance(files, list) and len(files) == len(data) else [None] * len(data)
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
        names += files
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


def _cifar_classes(location: str, kind: str, storage_options: dict) -> tuple[str, ...]:
    """Class names from ``batches.meta.txt`` / ``batches.meta``; the standard names if absent."""
    sub, meta = (
        ("cifar-10-batches-bin", "batches.meta.txt")
        if kind == "cifar10-bin"
        else ("cifar-10-batches-py", "batches.meta")
    )
    path = _first([_join(location, f"{sub}/{meta}"), _join(location, meta)], storage_options)
    if path is None:
        return CIFAR10_CLASSES
    data = _read(path, storage_options, limit=1 << 20)
    if kind == "cifar10-bin":
        names = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    else:
        meta_obj = restricted_loads(data, path)
        names = _get(meta_obj, "label_names") if isinstance(meta_obj, dict) else None
        if not isinstance(names, list):
            raise SourceError(f"{path}: no b'label_names' list")
        names = [_text(n) for n in names]
    if len(names) != 10:
        raise SourceError(f"{path}: lists {len(names)} class names, CIFAR-10 has 10")
    return tuple(names)


# ----------------------------------------------------------------------------- detection


def detect_kind(location: str, storage_options: dict | None = None) -> str | None:
    """The raw dataset kind at ``location`` (``"mnist"``, ``"cifar10-bin"``, ``"cifar10-py"``) or ``None``."""
    options = storage_options or {}

    def has(*names: str) -> bool:
        return _first([_join(location, n) for n in names], options) is not None

    if has(*[c for s in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte") for c in _mnist_candidates("", s)]):
        return "mnist"
    if has(
        "data_batch_1.bin",
        "test_batch.bin",
        "cifar-10-batches-bin/data_batch_1.bin",
        "cifar-10-batches-bin/test_batch.bin",
    ):
        return "cifar10-bin"
    if has("data_batch_1", "test_batch", "cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"):
        return "cifar10-py"
    return None


_RAW_READERS: dict[str, Callable[..., tuple]] = {
    "mnist": read_mnist,
    "cifar10-bin": read_cifar10_bin,
    "cifar10-py": read_cifar10_py,
}


def _open_raw(kind: str, location: str, options: dict) -> Source:
    splits: dict[str, Split] = {}
    for split in ("train", "test"):
        out = _RAW_READERS[kind](location, split, options)
        splits[split] = ArraySplit(out[0], out[1].tolist(), out[2] if len(out) > 2 else None)
    if kind == "mnist":
        return Source(kind, location, tuple(str(d) for d in range(10)), splits, "mnist")
    return Source(kind, location, _cifar_classes(location, kind, options), splits, "cifar10")
