"""The same 200 images through NDFImageFolder, WebDataset (local and S3) and HF datasets
give identical tensors: every adapter goes through the core's one decode path."""

from __future__ import annotations

import datasets
import pytest
import torch
import webdataset as wds
from ndf_datasets.integrations import s3 as nds3
from ndf_datasets.integrations.torchvision import NDFImageFolder
from ndf_datasets.integrations.webdataset import ndf_decoder, ndf_samples, write_shards

import ndf_datasets as ndf

from .conftest import make_image
from .s3server import s3_bucket, s3_env, s3_server  # noqa: F401  (pytest fixtures)

COUNT, SIZE = 200, 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("same200")
    imgs = [make_image(8, 8, 3, seed=1000 + i) for i in range(COUNT)]
    base = ndf.fit_base(imgs[:64], epochs=1, batch_size=32, progress=False)
    recs = ndf.encode_batch(imgs, base=base, psnr=None, steps=5, labels=[i % 2 for i in range(COUNT)])
    folder = root / "folder"
    for c in ("even", "odd"):
        (folder / c).mkdir(parents=True)
    for i, r in enumerate(recs):
        (folder / ("even", "odd")[i % 2] / f"{i:06d}.ndf").write_bytes(r)
    base.save(folder / ndf.base_filename(base.hash))
    shards = root / "shards"
    shards.mkdir()
    samples = [{"__key__": f"{i:06d}", "ndf": r, "cls": i % 2} for i, r in enumerate(recs)]
    write_shards(str(shards / "train-%06d.tar"), samples, maxcount=64, base=base)
    reference = {f"{i:06d}": ndf.decode(r, base=base, size=SIZE) for i, r in enumerate(recs)}
    return folder, shards, reference


def _check(got: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(reference)
    for k, v in got.items():
        assert torch.equal(v, reference[k]), k


def test_imagefolder(dataset):
    folder, _, reference = dataset
    ndf.clear_base_cache()
    ds = NDFImageFolder(str(folder), size=SIZE)
    got = {}
    for i, (path, _) in enumerate(ds.samples):
        got[path.rsplit("/", 1)[-1][:-4]] = ds[i][0]
    _check(got, reference)


def test_webdataset_local(dataset):
    _, shards, reference = dataset
    ndf.clear_base_cache()
    urls = str(shards / "train-{000000..000003}.tar")
    ds = wds.WebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)))
    _check({s["__key__"]: s["ndf"] for s in ds}, reference)


def test_webdataset_and_hf_from_s3(dataset, s3_bucket):  # noqa: F811
    _, shards, reference = dataset
    fs = s3_bucket.filesystem()
    for p in shards.iterdir():
        fs.put(str(p), s3_bucket.path(f"same200/{p.name}"))
    nds3.configure_s3(endpoint_url=s3_bucket.endpoint_url, key=s3_bucket.key, secret=s3_bucket.secret, region=s3_bucket.region)
    try:
        ndf.clear_base_cache()
        url = s3_bucket.url("same200/train-{000000..000003}.tar")
        ds = wds.WebDataset(url, shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)))
        _check({s["__key__"]: s["ndf"] for s in ds}, reference)
    finally:
        nds3.configure_s3()


def _hf_rows(ds) -> dict[str, torch.Tensor]:
    from ndf_datasets.integrations.hf import NDFImage

    ds = ds.cast_column("image", NDFImage(size=SIZE)).with_format("torch")
    return {row["key"]: row["image"] for row in ds}


def test_hf_datasets_local(dataset, tmp_path):
    _, shards, reference = dataset
    ndf.clear_base_cache()
    _check(_hf_rows(datasets.load_dataset(str(shards), split="train", cache_dir=str(tmp_path / "hf"))), reference)


def test_hf_datasets_streaming_from_s3(dataset, s3_bucket, tmp_path):  # noqa: F811
    _, shards, reference = dataset
    fs = s3_bucket.filesystem()
    for p in shards.iterdir():
        fs.put(str(p), s3_bucket.path(f"hf200/{p.name}"))
    ndf.clear_base_cache()
    nds3.configure_s3(endpoint_url=s3_bucket.endpoint_url, key=s3_bucket.key, secret=s3_bucket.secret, region=s3_bucket.region)
    try:
        stream = datasets.load_dataset(
            s3_bucket.url("hf200"), storage_options=s3_bucket.storage_options, split="train", streaming=True,
            cache_dir=str(tmp_path / "hf"),
        )
        _check(_hf_rows(stream), reference)
    finally:
        nds3.configure_s3()
