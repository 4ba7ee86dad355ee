"""Random access: shard indexes, ``NDFShardDataset(OUT, split, size=...)`` equal to iteration, local and on S3.

Tiny conversions (8x8 images); the gzip restart interval is made small (4 KiB of tar) so
every shard holds several independently decompressible groups, as a real 10000-image shard does.
"""

from __future__ import annotations

import gzip
import os
import random
import struct
from pathlib import Path

import pytest
import torch
from ndf_datasets.integrations.webdataset import epoch_dataset, ndf_decoder, ndf_samples
from torch.utils.data import DataLoader

import ndf_datasets as ndf
from ndf_datasets.data import NDFShardDataset, RangeCache, shards
from ndf_datasets.data.shardindex import ShardIndex

from .test_sources import write_image_folder

try:  # the moto fixtures; the S3 test skips without them
    from .s3server import s3_bucket, s3_env, s3_server  # noqa: F401
except ImportError:  # pragma: no cover
    s3_bucket = None

KW = dict(shard_size=10, batch_size=8, steps=5, base=None, base_epochs=1, psnr=20.0, progress=False)
SIZE = 12


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("ra") / "src", {"train": 12, "test": 3})


def _convert(src: Path, out: Path, **kw) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setattr(shards, "GROUP_BYTES", 4096)
    try:
        ndf.convert(src, out, **{**KW, **kw})
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="module")
def out(src, tmp_path_factory) -> Path:
    return _convert(src, tmp_path_factory.mktemp("ra-out") / "out")


def _iterated(out: Path, split: str, size) -> dict[str, tuple[torch.Tensor, int]]:
    urls = sorted(str(p) for p in out.glob(f"{split}-*.tar*"))
    ds = epoch_dataset(urls).map(ndf_samples(ndf_decoder(size=size)))
    return {s["__key__"]: s["ndf"] for s in ds}


def test_shard_layout_index_finds_every_record():
    rng = random.Random(3)
    samples = [shards.Sample(f"{i:06d}", os.urandom(rng.randint(1, 3000)), i % 5, {"i": i}) for i in range(300)]
    tar = shards.tar_bytes(m for s in samples for m in s.members(shards.COMPACT))
    assert shards.gzip_bytes(tar) == gzip.compress(tar, 9, mtime=0), "no restart points: plain gzip"
    for compress in (False, True):
        for members in (shards.COMPACT, shards.MEMBERS):
            data, index = shards.shard_layout(samples, members, compress)
            assert data == shards.shard_bytes(samples, members, compress)
            assert [parts["ndf"] for _, parts in shards.parse_shard(data, "s")] == [s.ndf for s in samples]
            assert index.compressed == compress and (len(index.groups) > 5) == compress
            raw = index.to_bytes()
            assert ShardIndex.parse(raw, "i") == index and len(raw) == 64 + 8 * len(samples) + 16 * len(index.groups)
            for i in range(len(samples)):
                start, end, _, _ = index.locate(i)
                assert end - start < (70_000 if compress else 3001)  # one group or the record: never the shard
                assert index.record(i, lambda a, b: data[a:b], "s") == samples[i].ndf


def test_index_file_is_checked_before_use():
    data, index = shards.shard_layout([shards.Sample(f"{i:06d}", b"x" * 100) for i in range(5)], compress=True)
    raw = index.to_bytes()
    for bad, match in [
        (b"NOTINDEX" + raw[8:], "magic"),
        (raw[:-1], "has 120 bytes, this one 119"),
        (raw + b"\0", "this one 121"),
        (raw[:70] + bytes([raw[70] ^ 1]) + raw[71:], "CRC"),
        (raw[:8] + struct.pack("<H", 9) + raw[10:], "version 9"),
    ]:
        with pytest.raises(ndf.NDFFormatError, match=match) as err:
            ShardIndex.parse(bad, "stats/x.ndfidx")
        assert "stats/x.ndfidx" in str(err.value)
    with pytest.raises(ndf.NDFFormatError, match="does not decompress|ends past"):
        index.record(2, lambda a, b: b"\xff" * (b - a), "x")


def test_range_cache_keeps_to_its_byte_limit():
    cache = RangeCache(100)
    for i in range(20):
        assert cache.get(i, lambda i=i: bytes(30 + i)) == bytes(30 + i)
        assert cache.size <= 100
    assert cache.misses == 20 and len(cache) <= 3
    cache.get(19, lambda: b"never")
    assert cache.hits == 1
    assert cache.get("big", lambda: bytes(500)) == bytes(500) and "big" not in cache._items


@pytest.mark.parametrize("split", ["train", "test"])
def test_random_access_equals_iteration(out, split):
    ds = NDFShardDataset(out, split, size=SIZE)
    seen = _iterated(out, split, SIZE)
    assert len(ds) == len(seen) == {"train": 24, "test": 6}[split]
    order = list(range(len(ds)))
    random.Random(1).shuffle(order)
    for i in order:
        x, label = ds[i]
        assert torch.equal(x, seen[ds.key(i)]), i
        assert label == (i // (len(ds) // 2))  # ImageFolder order: class 0 then class 1
    assert ds.cache.misses < len(ds), "neighbours in a gzip group come from the cache"
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_dataloader_shuffles_over_shards_with_workers(out):
    ds = NDFShardDataset(out, "train", size=SIZE)
    seen = _iterated(out, "train", SIZE)
    loader = DataLoader(ds, batch_size=5, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    images, labels = zip(*[(x, y) for xb, yb in loader for x, y in zip(xb, yb)])
    assert len(images) == len(ds)
    pool = list(seen.values())
    for x in images:  # every image once (a batch renders in one pass: equal to float rounding)
        match = [k for k, p in enumerate(pool) if torch.allclose(x, p, rtol=0, atol=1e-6)]
        assert match, "an image iteration does not give"
        pool.pop(match[0])
    assert pool == []
    assert sorted(labels) == sorted(ds[i][1] for i in range(len(ds)))


@pytest.mark.parametrize("layout,extra", [("webdataset", {"compress": False}), ("parquet", {}), ("files", {})])
def test_every_layout_gives_the_same_images(src, out, tmp_path, layout, extra):
    other = _convert(src, tmp_path / layout, layout=layout, **extra)
    ref = NDFShardDataset(out, "train", size=SIZE)
    ds = NDFShardDataset(other, "train", size=SIZE)
    assert len(ds) == len(ref)
    for i in (0, 7, 13, 23, 11):
        assert ds.record(i) == ref.record(i)
        assert torch.equal(ds[i][0], ref[i][0]) and ds[i][1] == ref[i][1]


def test_damaged_or_missing_index_is_an_error_naming_it(src, tmp_path):
    out = _convert(src, tmp_path / "out", splits=["test"])
    idx = out / "stats" / "test-000000.ndfidx"
    raw = idx.read_bytes()
    idx.write_bytes(raw[:-3])
    with pytest.raises(ndf.NDFFormatError, match="test-000000.ndfidx"):
        NDFShardDataset(out, "test")[0]
    idx.unlink()
    with pytest.raises(FileNotFoundError, match="run ndf convert again"):
        NDFShardDataset(out, "test")[0]
    ndf.convert(src, out, splits=["test"], **KW)  # resume repairs the index
    assert NDFShardDataset(out, "test")[0][0].shape == (3, 8, 8)


@pytest.mark.skipif(s3_bucket is None, reason="moto is not installed")
def test_random_access_over_s3_with_range_requests(out, s3_bucket, monkeypatch):
    import s3fs

    fs = s3_bucket.filesystem()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            fs.pipe(s3_bucket.path(f"out/{p.relative_to(out).as_posix()}"), p.read_bytes())
    calls = []
    real = s3fs.S3FileSystem._cat_file

    async def spy(self, path, version_id=None, start=None, end=None):
        calls.append((path.rsplit("/", 1)[-1], start, end))
        return await real(self, path, version_id=version_id, start=start, end=end)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", spy)
    local = NDFShardDataset(out, "train", size=SIZE)
    ds = NDFShardDataset(s3_bucket.url("out"), "train", size=SIZE, storage_options=s3_bucket.storage_options,
                         cache_bytes=8 << 10)  # fmt: skip
    sizes = {p.name: p.stat().st_size for p in out.glob("train-*.tar.gz")}
    for i in (23, 0, 12, 5, 23, 22):
        assert torch.equal(ds[i][0], local[i][0])
    ranged = [c for c in calls if c[0].endswith(".tar.gz")]
    assert ranged and all(10 <= start < end <= sizes[name] - 8 for name, start, end in ranged), "ranges, never whole shards"
    assert all(end - start < sizes[name] / 2 for name, start, end in ranged if name != "train-000002.tar.gz"), calls
    assert len(ranged) == ds.reads == ds.cache.misses < 6, "one range read per record not in the cache"
    assert ds.read_bytes < sum(sizes.values()) and ds.cache.size <= 8 << 10
