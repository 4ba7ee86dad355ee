"""Bad input through every adapter: an unknown format version or a corrupt file is a clear
NDFError naming the file by default, and is skipped and counted in the opt-in mode."""

from __future__ import annotations

import struct
import zlib

import datasets
import pytest
import webdataset as wds
from ndf_datasets.integrations.hf import NDFImage, skipped_rows
from ndf_datasets.integrations.torchvision import NDFImageFolder, ndf_collate
from ndf_datasets.integrations.webdataset import NDFDecodeError, SkipCounter, ndf_decoder, ndf_samples, write_shards

import ndf_datasets as ndf

from .conftest import make_image


def _future_version(blob: bytes) -> bytes:
    body = bytearray(blob[:-4])
    body[3] = 9  # a format version this library does not know, with a valid checksum
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def _corrupt(blob: bytes) -> bytes:
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0x40
    return bytes(bad)


@pytest.fixture(scope="module", params=["version", "corrupt"])
def bad_set(request):
    blobs = ndf.encode_batch([make_image(8, 8, 3, seed=i) for i in range(4)], psnr=None, steps=5)
    spoil = _future_version if request.param == "version" else _corrupt
    blobs[2] = spoil(blobs[2])
    err = ndf.NDFVersionError if request.param == "version" else ndf.NDFChecksumError
    return blobs, err


def test_imagefolder(bad_set, tmp_path):
    blobs, err = bad_set
    (tmp_path / "a").mkdir()
    for i, b in enumerate(blobs):
        (tmp_path / "a" / f"{i}.ndf").write_bytes(b)
    ds = NDFImageFolder(str(tmp_path), size=8)
    with pytest.raises(err, match="2.ndf"):
        ds[2]
    skipping = NDFImageFolder(str(tmp_path), size=8, on_error="skip")
    batch = ndf_collate([skipping[i] for i in range(4)])
    assert len(batch[0]) == 3 and skipping.error_count == 1


def test_webdataset(bad_set, tmp_path):
    blobs, err = bad_set
    url = str(tmp_path / "s-000000.tar")
    with pytest.raises(err):  # write_shards refuses to write a bad sample in the first place
        write_shards(str(tmp_path / "w-%06d.tar"), [{"__key__": f"k{i}", "ndf": b} for i, b in enumerate(blobs)])
    with wds.TarWriter(url) as sink:  # a shard that went bad after it was written
        for i, b in enumerate(blobs):
            sink.write({"__key__": f"k{i}", "ndf": b})
    with pytest.raises(NDFDecodeError, match="k2") as info:
        list(wds.WebDataset(url, shardshuffle=False).map(ndf_samples(ndf_decoder(size=8))))
    assert isinstance(info.value.__cause__, err)
    counter = SkipCounter(warn=False)
    kept = list(wds.WebDataset(url, shardshuffle=False).map(ndf_samples(ndf_decoder(size=8)), handler=counter))
    assert [s["__key__"] for s in kept] == ["k0", "k1", "k3"] and counter.count == 1


def test_hf(bad_set):
    blobs, err = bad_set
    rows = {"image": [{"bytes": b, "path": f"train/{i}.ndf"} for i, b in enumerate(blobs)]}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({"image": NDFImage(size=8)}))
    with pytest.raises(err, match="train/2.ndf"):
        ds[2]["image"]
    before = skipped_rows()[0]
    skipping = ds.cast_column("image", NDFImage(size=8, on_error="skip"))
    with pytest.warns(UserWarning, match="train/2.ndf"):
        images = [skipping[i]["image"] for i in range(4)]
    assert images[2] is None and all(x is not None for j, x in enumerate(images) if j != 2)
    assert skipped_rows()[0] == before + 1
