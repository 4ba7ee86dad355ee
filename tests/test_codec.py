"""Round trips through the public API: sizes, channels, batching, determinism, PSNR honesty."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ndf_datasets as ndf
from ndf_datasets.codec.fitting import psnr
from ndf_datasets.codec.images import to_tensor

from .conftest import make_image


def test_roundtrip_reaches_target_and_header_psnr_is_honest(rgb_image, rgb_blob):
    x = ndf.decode(rgb_blob)
    assert x.shape == (3, 24, 32) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    measured = float(psnr(x[None], to_tensor(rgb_image)[None]))
    info = ndf.inspect(rgb_blob)
    assert measured >= 26.0 - 0.05
    assert abs(info["fit_psnr"] - measured) < 0.01
    assert info["bytes"] == len(rgb_blob) and info["kind"] == "field"
    assert info["height"] == 24 and info["width"] == 32 and info["channels"] == 3


@pytest.mark.parametrize("size", [None, 8, (12, 16), (48, 64), (17, 41), (96, 20)])
def test_any_size_non_square(rgb_blob, size):
    x = ndf.decode(rgb_blob, size=size)
    expect = {None: (24, 32), 8: (8, 8)}.get(size, size)
    assert x.shape == (3, *expect)
    assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1


def test_downscaled_decode_does_not_alias(rgb_image, rgb_blob):
    ref = to_tensor(rgb_image)[None]
    full = float(psnr(ndf.decode(rgb_blob)[None], ref))
    for h, w in ((12, 16), (6, 8)):
        small = ndf.decode(rgb_blob, size=(h, w))[None]
        assert float(psnr(small, F.interpolate(ref, size=(h, w), mode="area"))) >= full - 0.1


def test_upscaled_decode_is_a_smooth_version_of_the_field(rgb_image, rgb_blob):
    big = ndf.decode(rgb_blob, size=(48, 64))
    back = F.interpolate(big[None], size=(24, 32), mode="area")
    assert float(psnr(back, ndf.decode(rgb_blob)[None])) > 30


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_channels(channels):
    img = make_image(16, 20, channels, seed=channels)
    if channels == 1:
        img = img[:, :, 0]  # plain H x W grayscale array
    blob = ndf.encode(img, psnr=28.0, steps=200)
    x = ndf.decode(blob)
    assert x.shape == (channels, 16, 20)
    assert ndf.inspect(blob)["colorspace"] == {1: "gray", 3: "rgb", 4: "rgba"}[channels]


def test_pil_and_tensor_inputs_give_same_bytes(rgb_image):
    a = ndf.encode(Image.fromarray(rgb_image), psnr=25.0, steps=60)
    b = ndf.encode(torch.from_numpy(rgb_image).permute(2, 0, 1).float() / 255, psnr=25.0, steps=60)
    assert a == b


def test_deterministic_under_seed(rgb_image):
    a = ndf.encode(rgb_image, psnr=28.0, steps=80, seed=3)
    b = ndf.encode(rgb_image, psnr=28.0, steps=80, seed=3)
    assert a == b


def test_batch_decode_equals_per_item_decode():
    imgs = [make_image(16, 16, 3, seed=s) for s in range(5)]
    blobs = ndf.encode_batch(imgs, psnr=26.0, steps=120)
    batch = ndf.decode_batch(blobs, size=(20, 12))
    assert batch.shape == (5, 3, 20, 12)
    for i, b in enumerate(blobs):
        torch.testing.assert_close(batch[i], ndf.decode(b, size=(20, 12)), rtol=0, atol=1e-6)


def test_batch_decode_mixed_original_sizes_needs_size():
    blobs = ndf.encode_batch([make_image(16, 16, seed=1), make_image(12, 20, seed=2)], psnr=24.0, steps=60)
    with pytest.raises(ValueError, match="explicit size"):
        ndf.decode_batch(blobs)
    out = ndf.decode_batch(blobs, size=10)
    for i, b in enumerate(blobs):
        torch.testing.assert_close(out[i], ndf.decode(b, size=10), rtol=0, atol=1e-6)


def test_encode_batch_reaches_each_images_target():
    imgs = [make_image(16, 16, 3, seed=s) for s in range(4)]
    blobs = ndf.encode_batch(imgs, psnr=24.0, steps=300)
    for img, b in zip(imgs, blobs):
        measured = float(psnr(ndf.decode(b)[None], to_tensor(img)[None]))
        assert measured >= 23.95 and abs(measured - ndf.inspect(b)["fit_psnr"]) < 0.01


def test_label_and_metadata_stored():
    blob = ndf.encode(make_image(8, 8), psnr=20.0, steps=30, label=7, metadata={"src": "x.png", "id": 3})
    info = ndf.inspect(blob)
    assert info["label"] == 7 and info["metadata"] == {"src": "x.png", "id": 3}


def test_higher_target_costs_more_bytes():
    img = make_image(24, 24, 3, seed=5)
    lo = ndf.encode(img, psnr=24.0, steps=300)
    hi = ndf.encode(img, psnr=36.0, steps=300)
    assert len(lo) < len(hi)
    assert ndf.inspect(lo)["fit_psnr"] < ndf.inspect(hi)["fit_psnr"]


@pytest.mark.parametrize(
    "bad, err",
    [
        (np.zeros((4, 4, 3), dtype=np.float64), TypeError),
        (np.zeros((4, 4, 2), dtype=np.uint8), ValueError),
        (torch.full((3, 4, 4), 2.0), ValueError),
        (torch.zeros((3, 4, 4), dtype=torch.uint8), TypeError),
        ("image.png", TypeError),
    ],
)
def test_bad_images_rejected_clearly(bad, err):
    with pytest.raises(err):
        ndf.encode(bad, steps=5)


@pytest.mark.parametrize("size", [0, (0, 4), (4, -1), (2.5, 3), "32", (1, 2, 3)])
def test_bad_sizes_rejected(rgb_blob, size):
    with pytest.raises(ValueError):
        ndf.decode(rgb_blob, size=size)


def test_output_size_limit_checked_before_allocating(rgb_blob):
    with pytest.raises(ValueError, match="max_decode_pixels"):
        ndf.decode_batch([rgb_blob] * 64, size=(60000, 60000))


def test_decoder_cost_is_reported(rgb_blob):
    assert 0 < ndf.inspect(rgb_blob)["macs_per_pixel"] <= 3000


def test_without_early_stop_keeps_the_cheapest_snapshot_meeting_the_target():
    img = make_image(24, 24, 3, seed=9)
    fast = ndf.encode(img, psnr=24.0, steps=400)
    small = ndf.encode(img, psnr=24.0, steps=400, early_stop=False)
    assert ndf.inspect(small)["fit_psnr"] >= 23.95
    assert len(small) < len(fast)
