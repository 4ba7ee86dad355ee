"""Image sources for conversion: raw dataset copies, ImageFolder trees and file lists.

:func:`open_source` recognises what a location holds and returns a :class:`Source`, a set of
named splits whose images can be read in slices (so a conversion holds one shard in memory,
not the dataset):

* **MNIST** IDX files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
  ``t10k-*`` (also under ``MNIST/raw/``, as torchvision keeps them).
* **CIFAR-10, binary version**: ``cifar-10-batches-bin/`` with ``data_batch_1..5.bin``,
  ``test_batch.bin`` (records of 1 label byte + 3072 pixel bytes) and ``batches.meta.txt``.
* **CIFAR-10, python version** (what torchvision downloads): ``cifar-10-batches-py/`` with
  ``data_batch_1..5``, ``test_batch`` and ``batches.meta``. These are pickles; they are read
  with :class:`RestrictedUnpickler`, which rebuilds only uint8/int arrays through this
  module's own functions and refuses every other global, so a hostile file can not run code.
* an **ImageFolder** tree ``root/<class>/<image>`` (or ``root/<split>/<class>/<image>`` for
  the split names in :data:`SPLIT_NAMES`), locally or at any fsspec URL (``s3://...``).
* a **list of image files** (paths or URLs): one unlabelled ``train`` split.

Every reader checks sizes before allocating and raises :class:`SourceError` (a
``ValueError``) or ``FileNotFoundError`` naming the file and what is wrong. Nothing is ever
downloaded from the internet: locations are read as they are.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codec import LIMITS, is_url, read_url

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

#: the CIFAR-10 class names, in label order (used when ``batches.meta*`` is absent)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: image file extensions an ImageFolder source reads (torchvision's list)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: sub-folder names that make an ImageFolder root a set of splits
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
#: largest raw file (after gunzip) read into memory; the real MNIST/CIFAR files are < 200 MB
MAX_RAW_BYTES = 1 << 30

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class SourceError(ValueError):
    """A source file is malformed or unsupported; the message names the file and the problem."""


# ----------------------------------------------------------------------------- splits and sources


class Split:
    """A split of a source: ``len(split)`` images, read in slices.

    Attributes:
        labels: one label per image (``None`` for unlabelled sources).
    """

    labels: list[int | None]

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, start: int, stop: int) -> list[np.ndarray]:
        """Images ``start..stop-1`` as ``H x W x C`` uint8 arrays."""
        raise NotImplementedError

    def names(self, start: int, stop: int) -> list[str | None]:
        """The source file name of images ``start..stop-1`` where known, else ``None``."""
        return [None] * (min(stop, len(self)) - start)

    def fingerprint(self, h: Any) -> None:
        """Feed what identifies this split's content into the hash object ``h``."""
        h.update(repr(self.labels).encode())


@dataclass
class ArraySplit(Split):
    """A split held in memory: ``N x H x W x C`` uint8 images and ``N`` labels."""

    array: np.ndarray
    labels: list[int | None]
    filenames: list[str] | None = None

    def images(self, start: int, stop: int) -> list[np.ndarray]:
        return list(self.array[start:stop])

    def names(self, start: int, stop: int) -> list[str | None]:
        if self.filenames is None:
            return super().names(start, stop)
        return list(self.filenames[start:stop])

    def fingerprint(self, h: Any) -> None:
        """The pixels and labels (the arrays are in memory anyway)."""
        super().fingerprint(h)
        h.update(repr(self.array.shape).encode())
        h.update(memoryview(np.ascontiguousarray(self.array)).cast("B"))


@dataclass
class FileSplit(Split):
    """A split of image files, decoded with Pillow when read.

    Attributes:
        files: path or URL of each image.
        labels: label of each image, or ``None``.
        rel: the name recorded in each sample's metadata (path relative to the source root).
        mode: Pillow mode every image is converted to (``"L"``, ``"RGB"``, ``"RGBA"``).
    """

    files: list[str]
    labels: list[int | None]
    rel: list[str]
    mode: str = "RGB"
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    def images(self, start: int, stop: int) -> list[np.ndarray]:
        return [load_image(f, self.mode, self.storage_options) for f in self.files[start:stop]]

    def names(self, start: int, stop: int) -> list[str | None]:
        return list(self.rel[start:stop])

    def fingerprint(self, h: Any) -> None:
        """The file names and labels (not their content, which would mean reading every file twice)."""
        super().fingerprint(h)
        h.update("\n".join(self.files).encode())
        h.update(self.mode.encode())


@dataclass
class Source:
    """What :func:`open_source` found.

    Attributes:
        kind: ``"mnist"``, ``"cifar10-bin"``, ``"cifar10-py"``, ``"imagefolder"`` or ``"files"``.
        location: the folder/URL it was read from (``"<N files>"`` for a file list).
        classes: class names in label order (empty for unlabelled sources).
        splits: split name -> :class:`Split`, in a fixed order (``train`` first).
        name: a short dataset name for manifests.
    """

    kind: str
    location: str
    classes: tuple[str, ...]
    splits: dict[str, Split]
    name: str

    def describe(self) -> dict[str, Any]:
        """JSON facts that identify the source: kind, location, classes, split sizes and a
        fingerprint (SHA-256 of the pixels and labels of raw copies; of the file names,
        labels and mode of image files), so a changed source is not mistaken for the same one."""
        h = hashlib.sha256()
        for name, split in self.splits.items():
            h.update(name.encode() + b"\0")
            split.fingerprint(h)
        return {
            "kind": self.kind,
            "location": self.location,
            "classes": list(self.classes),
            "counts": {s: len(v) for s, v in self.splits.items()},
            "fingerprint": h.hexdigest(),
        }


# ----------------------------------------------------------------------------- file access


def _join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name if location else name


def _abs(location: str) -> str:
    return location if is_url(location) else os.path.abspath(os.path.expanduser(location))


def _read(path: str, storage_options: dict, limit: int = MAX_RAW_BYTES) -> bytes:
    """A whole file, refusing one over ``limit`` bytes (gunzipped when it ends in ``.gz``)."""
    try:
        data = read_url(path, limit=limit, **(storage_options if is_url(path) else {}))
    except IsADirectoryError:
        raise SourceError(f"{path}: is a folder, expected a file") from None
    except ValueError as exc:  # NDFLimitError
        raise SourceError(f"{path}: {exc}") from None
    if path.endswith(".gz"):
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
                data = g.read(limit + 1)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: not a valid gzip file ({exc})") from None
        if len(data) > limit:
            raise SourceError(f"{path}: decompresses to more than {limit} bytes")
    return data


def _exists(path: str, storage_options: dict) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    import fsspec

    fs, p = fsspec.core.url_to_fs(path, **storage_options)
    return fs.isfile(p)


def _first(candidates: Sequence[str], storage_options: dict) -> str | None:
    return next((c for c in candidates if _exists(c, storage_options)), None)


def _list_tree(root: str, storage_options: dict) -> list[str]:
    """Every file under ``root`` as a ``/``-separated path relative to it, sorted."""
    if is_url(root):
        import fsspec

        fs, base = fsspec.core.url_to_fs(root, **storage_options)
        base = base.rstrip("/")
        return sorted(p[len(base) + 1 :] for p in fs.find(base) if p.startswith(base + "/"))
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        for f in files:
            out.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    return sorted(out)


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


# ----------------------------------------------------------------------------- CIFAR-10, python (pickles)


_ARRAY_DTYPES = {"u1": np.uint8, "i1": np.int8, "u2": np.uint16, "i2": np.int16, "i4": np.int32, "i8": np.int64}


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` inside a restricted pickle (never instantiated)."""


@dataclass
class _DType:
    """A numpy dtype as pickled: ``dtype(code, align, copy)`` then ``__setstate__``."""

    code: str
    byteorder: str = "|"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], (str, bytes)):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")
        order = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if order not in ("|", "<", ">", "="):
            raise pickle.UnpicklingError(f"unexpected dtype byte order {order!r}")
        self.byteorder = order

    def numpy(self) -> np.dtype:
        base = np.dtype(_ARRAY_DTYPES[self.code])
        if base.itemsize == 1 or self.byteorder == "|":
            return base
        return base.newbyteorder("<" if self.byteorder in ("<", "=") else ">")


def _make_dtype(code: Any, align: Any = 0, copy: Any = 1) -> _DType:
    code = code.decode("ascii", "replace") if isinstance(code, bytes) else code
    if not isinstance(code, str) or code.lstrip("<>|=") not in _ARRAY_DTYPES:
        raise pickle.UnpicklingError(f"array dtype {code!r} is not allowed (only {sorted(_ARRAY_DTYPES)})")
    return _DType(code.lstrip("<>|="))


class _ArrayStub:
    """An array being rebuilt: ``_reconstruct(ndarray, (0,), b'b')`` then ``__setstate__``."""

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected ndarray state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("ndarray state without an allowed dtype")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and 0 <= d < 1 << 40 for d in shape):
            raise pickle.UnpicklingError(f"invalid ndarray shape {shape!r:.80}")
        if isinstance(raw, str):  # protocol 0/1 pickles of py2 str read with encoding="latin1"
            raw = raw.encode("latin-1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("ndarray data is not a byte string")
        dt = dtype.numpy()
        count = int(np.prod(shape, dtype=np.int64))
        if count * dt.itemsize != len(raw):
            raise pickle.UnpicklingError(
                f"ndarray of shape {shape} and dtype {dt} needs {count * dt.itemsize} bytes, the data has {len(raw)}"
            )
        arr = np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if fortran else "C")
        self.value = np.ascontiguousarray(arr)


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _NDArrayClass:
        raise pickle.UnpicklingError("_reconstruct may only build a numpy.ndarray")
    return _ArrayStub()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how Python 3 writes ``bytes`` in a protocol-2 pickle."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 text")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDArrayClass,
    ("numpy", "dtype"): _make_dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that can only rebuild plain data and uint8/int numpy arrays.

    ``find_class`` maps the few globals a CIFAR batch pickle uses (numpy's ``_reconstruct``,
    ``ndarray`` and ``dtype``, and ``_codecs.encode`` for bytes in Python 3 protocol-2
    pickles) to small functions of this module that rebuild an array from its bytes after
    checking its size; every other global (``os.system``, ``builtins.eval``, any class) is
    refused. Persistent ids are refused by :class:`pickle.Unpickler` itself.

    Args:
        file: a binary file object holding the pickle.
        source: file name for error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """The allowed replacement for ``module.name``.

        Raises:
            pickle.UnpicklingError: any global that is not allowed (names it and the file).
        """
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to load global {module}.{name}; only numpy uint8/int arrays "
                "and plain data are allowed in a CIFAR-10 batch"
            )
        return found


def _unwrap(obj: Any) -> Any:
    """Replace :class:`_ArrayStub` objects by their arrays, recursively through lists/dicts/tuples."""
    if isinstance(obj, _ArrayStub):
        if obj.value is None:
            raise pickle.UnpicklingError("an ndarray without data")
        return obj.value
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(v) for v in obj)
    if isinstance(obj, (_DType, _NDArrayClass)) or obj is _NDArrayClass:
        raise pickle.UnpicklingError("a bare numpy dtype/class is not data")
    return obj


def restricted_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Args:
        data: the pickle.
        source: file name for error messages.

    Raises:
        SourceError: the pickle is malformed or uses a global that is not allowed.

    Returns:
        The object, with arrays as numpy arrays.
    """
    try:
        return _unwrap(RestrictedUnpickler(io.BytesIO(data), source).load())
    except SourceError:
        raise
    except pickle.UnpicklingError as exc:
        message = str(exc)
        raise SourceError(message if message.startswith(source) else f"{source}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside the unpickler is a bad file
        raise SourceError(f"{source}: not a valid CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None


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


# ----------------------------------------------------------------------------- image files


def load_image(path: str, mode: str, storage_options: dict | None = None) -> np.ndarray:
    """Decode an image file with Pillow and convert it to ``mode``.

    Raises:
        SourceError: not a readable image, or larger than ``LIMITS['max_pixels']``.

    Returns:
        An ``H x W x C`` uint8 array.
    """
    from PIL import Image, UnidentifiedImageError

    data = _read(path, storage_options or {}, limit=LIMITS["max_file_bytes"])
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > LIMITS["max_pixels"] or max(w, h) > LIMITS["max_side"]:
                raise SourceError(f"{path}: image of {w}x{h} exceeds the NDF size limits")
            im = im.convert(mode) if im.mode != mode else im
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise SourceError(f"{path}: not a readable image ({exc})") from None
    return arr[:, :, None].copy() if arr.ndim == 2 else arr.copy()


def image_mode(path: str, storage_options: dict | None = None) -> str:
    """The Pillow mode a dataset whose first image is ``path`` is converted to (L, RGB or RGBA)."""
    from PIL import Image, UnidentifiedImageError

    data = _read(path, storage_options or {}, limit=LIMITS["max_file_bytes"])
    try:
        with Image.open(io.BytesIO(data)) as im:
            bands = im.getbands()
    except (UnidentifiedImageError, OSError) as exc:
        raise SourceError(f"{path}: not a readable image ({exc})") from None
    if "A" in bands:
        return "RGBA"
    return "L" if len(bands) == 1 and im.mode != "P" else "RGB"


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _image_folder(root: str, files: list[str], options: dict, where: str) -> tuple[list[str], list[str], list[int]]:
    """Classes and ``(relative path, label)`` of an ImageFolder given its relative file list."""
    by_class: dict[str, list[str]] = {}
    for rel in files:
        if "/" in rel and _is_image(rel) and not rel.startswith("."):
            by_class.setdefault(rel.split("/", 1)[0], []).append(rel)
    if not by_class:
        raise FileNotFoundError(
            f"{where}: no class sub-folders with image files ({', '.join(IMAGE_EXTENSIONS)}); "
            "expected <root>/<class>/<image> (or pass the image files as a list)"
        )
    classes = sorted(by_class)
    rels, labels = [], []
    for label, name in enumerate(classes):
        for rel in sorted(by_class[name]):
            rels.append(rel)
            labels.append(label)
    return classes, rels, labels


def _open_image_folder(location: str, options: dict, mode: str | None) -> Source:
    files = _list_tree(location, options)
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    split_dirs = [s for s in SPLIT_NAMES if s in tops]
    if (
        split_dirs
        and tops <= set(SPLIT_NAMES)
        and all(any(f.startswith(f"{s}/") and f.count("/") >= 2 for f in files) for s in split_dirs)
    ):
        parts = {s: [f[len(s) + 1 :] for f in files if f.startswith(f"{s}/")] for s in split_dirs}
    else:
        parts = {"train": files}
    layouts = {
        s: _image_folder(location, fs, options, _join(location, s) if len(parts) > 1 else location)
        for s, fs in parts.items()
    }
    classes = next(iter(layouts.values()))[0]
    for s, (cls, _, _) in layouts.items():
        if cls != classes:
            raise SourceError(f"{_join(location, s)}: classes {cls} differ from the first split's {classes}")
    prefix = {s: (f"{s}/" if len(parts) > 1 else "") for s in parts}
    first = _join(location, prefix[next(iter(parts))] + layouts[next(iter(parts))][1][0])
    mode = mode or image_mode(first, options)
    splits: dict[str, Split] = {}
    for s, (_, rels, labels) in layouts.items():
        full = [prefix[s] + r for r in rels]
        splits[s] = FileSplit([_join(location, r) for r in full], list(labels), full, mode, options)
    name = location.rstrip("/").rsplit("/", 1)[-1] or "images"
    return Source("imagefolder", location, tuple(classes), splits, name)


def _open_files(paths: Sequence[str], options: dict, mode: str | None) -> Source:
    files = [_abs(os.fspath(p)) for p in paths]
    if not files:
        raise ValueError("an empty list of image files")
    for f in files:
        if not _exists(f, options):
            raise FileNotFoundError(f"{f}: no such image file")
    mode = mode or image_mode(files[0], options)
    split = FileSplit(files, [None] * len(files), [f.rsplit("/", 1)[-1] for f in files], mode, options)
    return Source("files", f"<{len(files)} files>", (), {"train": split}, "images")


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
