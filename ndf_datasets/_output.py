"""Writing the command line's outputs: refuse to overwrite a file, save a decoded image as PNG.

Used by :mod:`ndf_datasets.cli` and :mod:`ndf_datasets.demo` (so neither imports the other).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_out", "save_png"]


def check_out(path: Path, force: bool) -> None:
    """Raise ``FileExistsError`` if ``path`` exists and ``force`` is false."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")


def save_png(tensor, path: Path, force: bool) -> None:
    """Write a ``C x H x W`` tensor in [0, 1] as an 8-bit PNG, atomically (temp file + rename)."""
    from PIL import Image

    check_out(path, force)
    arr = (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode).save(tmp)
    os.replace(tmp, path)
