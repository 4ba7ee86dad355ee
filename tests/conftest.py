"""Shared fixtures: small synthetic images made on the fly (tests never read ../shared)."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth, textured uint8 test image (gradients + blobs + a little noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    chans = []
    for c in range(channels):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        v = 0.5 + 0.3 * np.sin(2 * np.pi * (fx * xx / width + fy * yy / height) + ph)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        v += 0.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.1 * height * width))
        v += rng.normal(0, 0.01, size=v.shape)
        chans.append(v)
    arr = np.clip(np.stack(chans, -1), 0, 1)
    return (arr * 255).round().astype(np.uint8)


@pytest.fixture(scope="session")
def rgb_image() -> np.ndarray:
    return make_image(24, 32, 3, seed=1)


@pytest.fixture(scope="session")
def rgb_blob(rgb_image) -> bytes:
    import ndf_datasets as ndf

    return ndf.encode(rgb_image, psnr=26.0, steps=300, seed=0)
