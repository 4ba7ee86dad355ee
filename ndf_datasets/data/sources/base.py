"""What every source is made of: splits read in slices, the :class:`Source`, and file access.

A :class:`Split` is ``len(split)`` images read in slices (so a conversion holds one shard in
memory, not the dataset); :class:`ArraySplit` holds them in memory. Files are read whole,
locally or at any fsspec URL, refusing one over a size limit and gunzipping ``.gz`` files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...codec import is_url, read_url

__all__ = ["MAX_RAW_BYTES", "ArraySplit", "Source", "SourceError", "Split"]

#: largest raw file (after gunzip) read into memory; the real MNIST/CIFAR files are < 200 MB
MAX_RAW_BYTES = 1 << 30


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
