"""Progressive resizing: the output size changes between epochs, the dataset and the loader stay.

One small conversion (``ndf convert`` defaults plus ``--format files``); each loader is built
once and iterated for three epochs at 4, 6 and 8 pixels through a real DataLoader with 2
persistent workers (the hard case: the workers keep their copy of the dataset, so the size
must reach them through shared memory). Pixels must equal a fresh decode at that size.
"""

from __future__ import annotations

import glob
import os

import pytest
import torch
from ndf_datasets.integrations.sizes import SharedSize
from torch.utils.data import DataLoader

import ndf_datasets as ndf

from .test_sources import write_image_folder

SIZES = (4, 6, 8)
FAST = dict(shard_size=4, batch_size=4, steps=5, base=None, base_epochs=1, psnr=20.0, progress=False)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("progressive")
    src = write_image_folder(root / "src", {"train": 4})
    shards = ndf.convert(src, root / "shards", **FAST)
    files = ndf.convert(src, root / "files", layout="files", **{**FAST, "base": next((root / "shards").glob("*.ndfbase"))})
    assert files.base_hash == shards.base_hash
    base = ndf.load_base(next((root / "shards").glob("*.ndfbase")))
    blobs = sorted((root / "files" / "train").rglob("*.ndf"))
    reference = {p.stem: {s: ndf.decode(p.read_bytes(), size=s, base=base) for s in SIZES} for p in blobs}
    return root, reference


def _same(a: torch.Tensor, b: torch.Tensor, what: object) -> None:
    """Equal up to the last bits a batched forward pass may change (as in test_torchvision)."""
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=lambda m: f"{what}: {m}")


def _loader(ds, **kw) -> DataLoader:
    return DataLoader(ds, num_workers=2, persistent_workers=True, **kw)


def test_shared_size_is_validated_and_reads_back():
    size = SharedSize(16)
    assert size() == 16 and repr(size) == "SharedSize(16)"
    size.set((8, 12))
    assert size.get() == (8, 12)
    size.set(None)
    assert size.get() is None
    with pytest.raises(ValueError):
        size.set(0)


@pytest.mark.parametrize("deferred", [False, True], ids=["per-item", "deferred"])
def test_ndf_image_folder_set_size_reaches_persistent_workers(converted, deferred):
    from ndf_datasets.integrations.torchvision import NDFImageFolder, ndf_collate

    root, reference = converted
    ds = NDFImageFolder(root / "files" / "train", size=SIZES[0], deferred=deferred)
    keys = [os.path.basename(p)[:-4] for p, _ in ds.samples]
    loader = _loader(ds, batch_size=len(ds), collate_fn=ndf_collate if deferred else None)
    decoder = ds.decoder()
    for size in SIZES:
        ds.set_size(size)
        (batch,) = list(loader)
        x = decoder(batch) if deferred else batch[0]
        assert x.shape[-2:] == (size, size) and ds.size == size
        for key, image in zip(keys, x):
            _same(image, reference[key][size], (size, key))


def test_webdataset_decoder_follows_a_shared_size(converted):
    from ndf_datasets.integrations.webdataset import NDFWebDataset, ndf_decoder, ndf_samples

    root, reference = converted
    urls = sorted(glob.glob(str(root / "shards" / "train-*.tar.gz")))
    size = SharedSize(SIZES[0])
    ds = NDFWebDataset(urls, shardshuffle=False, empty_check=False).map(ndf_samples(ndf_decoder(size=size))).to_tuple(
        "__key__", "ndf"
    )
    loader = _loader(ds, batch_size=None)
    for px in SIZES:
        size.set(px)
        got = dict(loader)
        assert sorted(got) == sorted(reference)
        for key, image in got.items():
            _same(image, reference[key][px], (px, key))


def test_hf_render_transform_follows_a_shared_size(converted, tmp_path):
    datasets = pytest.importorskip("datasets")
    from ndf_datasets.integrations.hf import NDFImage, render_transform

    root, reference = converted
    ndf.clear_base_cache()
    ds = datasets.load_dataset(str(root / "shards"), split="train", cache_dir=str(tmp_path / "hf"))
    ds = ds.cast_column("image", NDFImage(decode=False, base=str(root / "shards")))
    size = SharedSize(SIZES[0])
    ds.set_transform(render_transform("image", size=size))
    loader = _loader(ds, batch_size=len(ds), collate_fn=lambda rows: rows)
    for px in SIZES:
        size.set(px)
        images = torch.stack([row["image"] for row in next(iter(loader))])
        assert images.shape[-2:] == (px, px)
        for row_key, image in zip(ds["key"], images):
            _same(image, reference[row_key][px], (px, row_key))
