"""ImageFolder trees and lists of image files: :class:`FileSplit`, decoded with Pillow when read.

An ImageFolder is ``root/<class>/<image>`` (or ``root/<split>/<class>/<image>`` for the
split names in :data:`SPLIT_NAMES`), locally or at any fsspec URL (``s3://...``); a list of
image files (paths or URLs) is one unlabelled ``train`` split.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...codec import LIMITS
from .base import Source, SourceError, Split, _abs, _exists, _join, _list_tree, _read

__all__ = ["IMAGE_EXTENSIONS", "SPLIT_NAMES", "FileSplit", "image_mode", "load_image"]

#: image file extensions an ImageFolder source reads (torchvision's list)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: sub-folder names that make an ImageFolder root a set of splits
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")



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
    # split folders: every top-level folder is a split name and holds class folders (one split
    # folder alone, root/train/<class>/..., is a split layout too: the usual one with no test set)
    by_split = (
        bool(split_dirs)
        and tops <= set(SPLIT_NAMES)
        and all(any(f.startswith(f"{s}/") and f.count("/") >= 2 for f in files) for s in split_dirs)
    )
    if by_split:
        parts = {s: [f[len(s) + 1 :] for f in files if f.startswith(f"{s}/")] for s in split_dirs}
    else:
        parts = {"train": files}
    layouts = {
        s: _image_folder(location, fs, options, _join(location, s) if by_split else location)
        for s, fs in parts.items()
    }
    classes = next(iter(layouts.values()))[0]
    for s, (cls, _, _) in layouts.items():
        if cls != classes:
            raise SourceError(f"{_join(location, s)}: classes {cls} differ from the first split's {classes}")
    prefix = {s: (f"{s}/" if by_split else "") for s in parts}
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
