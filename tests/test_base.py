"""Shared bases: fit, save/load, records referencing them by hash, wrong/missing base errors."""

from __future__ import annotations

import pytest
import torch

import ndf_datasets as ndf
from ndf_datasets.codec.fitting import psnr
from ndf_datasets.codec.images import to_tensor

from .conftest import make_image


@pytest.fixture(scope="module")
def train_images():
    return [make_image(16, 16, 3, seed=100 + i) for i in range(48)]


@pytest.fixture(scope="module")
def base(train_images):
    return ndf.fit_base(train_images, epochs=15, batch_size=16, progress=False, seed=0)


def test_base_roundtrip_is_byte_identical(base, tmp_path):
    path = base.save(tmp_path / "toy.ndfbase")
    loaded = ndf.load_base(path)
    assert loaded.hash == base.hash and loaded.to_bytes() == base.to_bytes()
    for k, v in base.weights.items():
        assert torch.equal(v, loaded.weights[k])
    assert ndf.load_base(path.read_bytes()).hash == base.hash
    with pytest.raises(FileExistsError):
        base.save(path)


def test_records_are_small_and_decode_with_loaded_base(base, tmp_path):
    loaded = ndf.load_base(base.save(tmp_path / "b.ndfbase"))
    img = make_image(16, 16, 3, seed=7)
    rec = ndf.encode(img, base=base, psnr=22.0, steps=150, label=3)
    info = ndf.inspect(rec)
    assert info["kind"] == "record" and info["base_hash"] == base.hash.hex() and info["label"] == 3
    assert len(rec) < len(ndf.encode(img, psnr=22.0, steps=150))
    a = ndf.decode(rec, base=base)
    b = ndf.decode(rec, base=loaded, size=(16, 16))
    assert torch.equal(a, b)
    assert abs(float(psnr(a[None], to_tensor(img)[None])) - info["fit_psnr"]) < 0.01


def test_records_decode_at_any_size_and_in_batches(base):
    imgs = [make_image(16, 16, 3, seed=s) for s in range(3)]
    recs = ndf.encode_batch(imgs, base=base, psnr=22.0, steps=100)
    batch = ndf.decode_batch(recs, base=base, size=(8, 24))
    for i, r in enumerate(recs):
        torch.testing.assert_close(batch[i], ndf.decode(r, base=base, size=(8, 24)), rtol=0, atol=1e-6)


def test_missing_or_wrong_base_is_a_clear_error(base, train_images):
    rec = ndf.encode(train_images[0], base=base, psnr=20.0, steps=30)
    with pytest.raises(ndf.NDFBaseError, match=base.hash.hex()):
        ndf.decode(rec)
    other = ndf.fit_base(train_images[:16], epochs=1, batch_size=16, progress=False, seed=1)
    with pytest.raises(ndf.NDFBaseError, match="given base"):
        ndf.decode(rec, base=other)


def test_fit_base_is_deterministic(train_images):
    a = ndf.fit_base(train_images[:16], epochs=2, batch_size=8, progress=False, seed=5)
    stacked = torch.stack([to_tensor(i) for i in train_images[:16]])  # the tensor input path
    b = ndf.fit_base(stacked, epochs=2, batch_size=8, progress=False, seed=5)
    assert a.hash == b.hash


def test_base_rejects_other_channel_count(base):
    with pytest.raises(ValueError, match="channel"):
        ndf.encode(make_image(16, 16, 1, seed=1), base=base, steps=5)


def test_fit_base_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="one size"):
        ndf.fit_base([make_image(8, 8), make_image(8, 12)], epochs=1, progress=False)


def test_fit_base_accepts_uint8_and_float_stacks_alike(train_images):
    u8 = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in train_images[:8]])
    a = ndf.fit_base(u8, epochs=1, batch_size=8, progress=False)
    b = ndf.fit_base(u8.float() / 255, epochs=1, batch_size=8, progress=False)
    assert a.hash == b.hash
    with pytest.raises(ValueError, match="uint8 or float"):
        ndf.fit_base(u8.float(), epochs=1, progress=False)


@pytest.mark.parametrize("config", [(4, 2, 8, 4, 8, 8), (4, 2, 8, 4, 8, 8, 2)])
def test_conv_field_base_with_amortised_encoder(train_images, tmp_path, config):
    base = ndf.fit_base(train_images[:16], config, arch="conv-field", epochs=1, batch_size=8, progress=False)
    assert base.arch.name == "conv-field" and any(s.role == "encoder" for s in base.arch.weight_specs())
    loaded = ndf.load_base(base.save(tmp_path / "cf.ndfbase"))
    assert loaded.hash == base.hash and loaded.arch.config == config
    recs = ndf.encode_batch(train_images[:3], base=loaded, psnr=None, steps=5)
    assert all(ndf.inspect(r)["arch"] == "conv-field" for r in recs)
    batch = ndf.decode_batch(recs, base=loaded, size=(20, 12))
    for i, r in enumerate(recs):
        torch.testing.assert_close(batch[i], ndf.decode(r, base=base, size=(20, 12)), rtol=0, atol=1e-6)
