"""Turning user images (PIL, ndarray, tensor) into the CxHxW float tensors the codec fits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["to_tensor", "COLORSPACE_OF_CHANNELS"]

COLORSPACE_OF_CHANNELS = {1: 0, 3: 1, 4: 2}


def to_tensor(image: Any) -> torch.Tensor:
    """Convert an image to a float32 ``C x H x W`` tensor in [0, 1] with C in {1, 3, 4}.

    Accepts a PIL image (modes L, RGB, RGBA; others are converted to RGB), an ``H x W`` or
    ``H x W x C`` uint8 ndarray, or a ``C x H x W`` (or ``H x W``) float tensor in [0, 1].

    Raises:
        TypeError: an unsupported type or dtype.
        ValueError: a bad shape, channel count or value range.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"ndarray images must be uint8 (H x W x C), got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"ndarray images must be H x W or H x W x C, got shape {image.shape}")
        x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 255.0
    elif isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(f"tensor images must be float C x H x W in [0, 1], got dtype {image.dtype}")
        x = image.detach().to("cpu", torch.float32)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise ValueError(f"tensor images must be C x H x W, got shape {tuple(image.shape)}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError("tensor images must hold finite values in [0, 1]")
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}: pass a PIL image, uint8 ndarray or float tensor")
    if x.shape[0] not in COLORSPACE_OF_CHANNELS:
        raise ValueError(f"images must have 1, 3 or 4 channels, got {x.shape[0]}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"empty image of shape {tuple(x.shape)}")
    return x.contiguous()
