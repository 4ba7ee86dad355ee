"""Readers for the benchmark datasets in ../shared/data (never used by the tests).

* CIFAR-10 WebP sprites: each ``*.webp`` holds 1000 images as a 40x25 grid of 32x32 tiles.
* MNIST IDX ``.gz`` files.
* Kodak PNGs.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cifar10(split: str = "train", count: int | None = None, start: int = 0, root: Path = DATA / "cifar10") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``N x 3 x 32 x 32`` images and int64 labels. ``test`` is restricted to the
    lossless images 0-999 unless ``start + count`` asks for more (then lossy JPEG-derived)."""
    if split == "train":
        files = [root / f"train_{i:02d}.webp" for i in range(50)]
    else:
        files = [root / "test_00.webp"] + [root / f"test_jpeg_lossy_{i:02d}.webp" for i in range(1, 10)]
    labels = np.array([int(c) for c in (root / f"{split}_labels.txt").read_text().strip()], dtype=np.int64)
    total = len(labels)
    end = total if count is None else min(total, start + count)
    out = []
    for k in range(start // 1000, (end + 999) // 1000):
        sprite = np.asarray(Image.open(files[k]).convert("RGB"))
        tiles = sprite.reshape(25, 32, 40, 32, 3).transpose(0, 2, 4, 1, 3).reshape(1000, 3, 32, 32)
        out.append(tiles)
    arr = np.concatenate(out)[start - (start // 1000) * 1000 :][: end - start]
    return torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(labels[start:end])


def mnist(split: str = "train", count: int | None = None, root: Path = DATA / "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``N x 1 x 28 x 28`` images and int64 labels from the IDX files."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "rb") as f:
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
        assert magic == 2051
        images = np.frombuffer(f.read(n * h * w), dtype=np.uint8).reshape(n, 1, h, w)
    with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "rb") as f:
        magic, n2 = struct.unpack(">II", f.read(8))
        assert magic == 2049 and n2 == n
        labels = np.frombuffer(f.read(n), dtype=np.uint8).astype(np.int64)
    count = n if count is None else min(n, count)
    return torch.from_numpy(images[:count].copy()), torch.from_numpy(labels[:count].copy())


def kodak(root: Path = DATA / "kodak") -> list[tuple[str, Image.Image]]:
    return [(p.name, Image.open(p).convert("RGB")) for p in sorted(root.glob("kodim*.png"))]
