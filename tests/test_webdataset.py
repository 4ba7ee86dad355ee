"""WebDataset integration: shard writing, per-sample and batched decoding, workers/ranks, S3, errors."""

from __future__ import annotations

import pickle
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest
import torch

import ndf_datasets as ndf

wds = pytest.importorskip("webdataset")

from ndf_datasets.integrations import s3 as nds3
from ndf_datasets.integrations import webdataset as nwd
from ndf_datasets.integrations.webdataset import (
    NDFDecodeError,
    SkipCounter,
    ndf_batch_decode,
    ndf_decoder,
    ndf_read,
    ndf_samples,
    write_shards,
)

from .conftest import make_image
from .s3server import s3_bucket, s3_env, s3_server  # noqa: F401  (pytest fixtures)

N, SIDE, SIZE, PER_SHARD = 12, 8, 16, 4
BRACE = "shard-{000000..000002}.tar"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def images():
    return [make_image(SIDE, SIDE, 3, seed=i) for i in range(N)]


@pytest.fixture(scope="module")
def field_blobs(images):
    return ndf.encode_batch(images, psnr=20, steps=30)


@pytest.fixture(scope="module")
def base(images):
    return ndf.fit_base(images, epochs=1, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def record_blobs(images, base):
    return ndf.encode_batch(images, psnr=20, steps=30, base=base)


def _samples(blobs):
    return [{"ndf": b, "cls": i % 3, "json": {"i": i}} for i, b in enumerate(blobs)]


def _key(i: int) -> str:
    return f"{i:08d}"


@pytest.fixture(scope="module")
def field_shards(tmp_path_factory, field_blobs):
    out = tmp_path_factory.mktemp("fields")
    return write_shards(str(out / "shard-%06d.tar"), _samples(field_blobs), maxcount=PER_SHARD)


@pytest.fixture(scope="module")
def record_shards(tmp_path_factory, record_blobs, base):
    out = tmp_path_factory.mktemp("records")
    return write_shards(str(out / "shard-%06d.tar"), _samples(record_blobs), maxcount=PER_SHARD, base=base)


@pytest.fixture(scope="module")
def field_ref(field_blobs):
    return {_key(i): ndf.decode(b, size=SIZE) for i, b in enumerate(field_blobs)}


@pytest.fixture(scope="module")
def record_ref(record_blobs, base):
    return {_key(i): ndf.decode(b, size=SIZE, base=base) for i, b in enumerate(record_blobs)}


@pytest.fixture
def s3_configured(s3_bucket):  # noqa: F811  (the imported fixture)
    nds3.configure_s3(
        endpoint_url=s3_bucket.endpoint_url, key=s3_bucket.key, secret=s3_bucket.secret, region=s3_bucket.region
    )
    yield s3_bucket
    nds3.configure_s3()


@pytest.fixture(autouse=True)
def _fresh_base_cache():
    """Bases must be found by each test itself, not inherited from an earlier one."""
    ndf.clear_base_cache()
    yield
    ndf.clear_base_cache()


def _dir(shards) -> Path:
    return Path(shards.urls[0]).parent


def _collect(ds, member="ndf"):
    """``{key: tensor}`` plus the keys in stream order and the full samples."""
    out, order, samples = {}, [], []
    for sample in ds:
        out[sample["__key__"]] = sample[member]
        order.append(sample["__key__"])
        samples.append(sample)
    return out, order, samples


def _assert_equal(got: dict, ref: dict, atol: float = 0.0):
    assert sorted(got) == sorted(ref)
    for k, want in ref.items():
        if atol:
            assert torch.allclose(got[k], want, rtol=0, atol=atol), k
        else:
            assert torch.equal(got[k], want), k


# --------------------------------------------------------------------------- writing


def test_write_shards_layout(field_shards, record_shards, base):
    assert field_shards.count == record_shards.count == N
    assert [Path(u).name for u in field_shards.urls] == [f"shard-{i:06d}.tar" for i in range(3)]
    with tarfile.open(field_shards.urls[0]) as tar:
        names = tar.getnames()
    assert names == [f"{_key(i)}.{ext}" for i in range(PER_SHARD) for ext in ("cls", "json", "ndf")]
    assert field_shards.base_url is None and not list(_dir(field_shards).glob("*.ndfbase"))
    assert record_shards.base_url == str(_dir(record_shards) / ndf.base_filename(base.hash))
    assert ndf.load_base(Path(record_shards.base_url).read_bytes()).hash == base.hash


def test_write_shards_validates(tmp_path, field_blobs, record_blobs, base):
    with pytest.raises(ValueError, match="% format"):
        write_shards(str(tmp_path / "one.tar"), _samples(field_blobs))
    with pytest.raises(ndf.NDFBaseError, match="needs base="):
        write_shards(str(tmp_path / "a-%03d.tar"), _samples(record_blobs))
    other = ndf.fit_base([make_image(SIDE, SIDE, 3, seed=99)] * 2, epochs=1, batch_size=2, progress=False, seed=5)
    if other.hash != base.hash:
        with pytest.raises(ndf.NDFBaseError):
            write_shards(str(tmp_path / "b-%03d.tar"), _samples(record_blobs), base=other)
    with pytest.raises(ValueError, match="no '.'"):
        write_shards(str(tmp_path / "c-%03d.tar"), [{"__key__": "a.b", "ndf": field_blobs[0]}])
    with pytest.raises(ValueError, match="'ndf' bytes"):
        write_shards(str(tmp_path / "d-%03d.tar"), [{"cls": 1}])
    with pytest.raises(ndf.NDFError):
        write_shards(str(tmp_path / "e-%03d.tar"), [{"ndf": b"not an ndf file"}])


# --------------------------------------------------------------------------- per-sample decoding


@pytest.mark.parametrize("form", ["paths", "file_urls", "brace"])
def test_decode_local_url_forms(field_shards, field_ref, form):
    paths = field_shards.urls
    urls = {
        "paths": paths,
        "file_urls": [Path(p).as_uri() for p in paths],
        "brace": f"{_dir(field_shards)}/{BRACE}",
    }[form]
    ds = wds.WebDataset(urls, shardshuffle=False).decode(ndf_decoder(size=SIZE))
    got, order, samples = _collect(ds)
    assert order == [_key(i) for i in range(N)]
    _assert_equal(got, field_ref)
    assert [s["cls"] for s in samples] == [i % 3 for i in range(N)]
    assert [s["json"] for s in samples] == [{"i": i} for i in range(N)]
    assert all(t.shape == (3, SIZE, SIZE) and t.dtype == torch.float32 for t in got.values())


def test_handler_leaves_other_extensions(tmp_path, field_blobs):
    handler = ndf_decoder(size=SIZE)
    for key in ("cls", "json", "png", "jpg", "ndfbase", "txt"):
        assert handler(key, b"1") is None
    assert handler("seg.ndf", field_blobs[0]).shape == (3, SIZE, SIZE)
    assert handler("NDF", field_blobs[0]).shape == (3, SIZE, SIZE)
    # in a pipeline, next to the stock "pil" handler and the basic .cls handler
    picture = make_image(6, 6, 3, seed=3)
    samples = [{"ndf": b, "cls": 2, "png": picture} for b in field_blobs[:2]]
    shards = write_shards(str(tmp_path / "mixed-%03d.tar"), samples)
    sample = next(iter(wds.WebDataset(shards.urls, shardshuffle=False).decode(handler, "pil")))
    assert sample["ndf"].shape == (3, SIZE, SIZE)
    assert sample["cls"] == 2
    assert sample["png"].size == (6, 6)  # a PIL image, decoded by webdataset's own handler


def test_records_find_their_base(record_shards, record_ref, base):
    brace = f"{_dir(record_shards)}/{BRACE}"
    ways = [
        lambda ds: ds.map(ndf_samples(ndf_decoder(size=SIZE))),  # next to the shard, by __url__
        lambda ds: ds.decode(ndf_decoder(size=SIZE, base_locations=[str(_dir(record_shards))])),
        lambda ds: ds.decode(ndf_decoder(size=SIZE, base=record_shards.base_url)),
        lambda ds: ds.decode(ndf_decoder(size=SIZE, base=base)),
    ]
    for way in ways:
        ndf.clear_base_cache()
        got, _, _ = _collect(way(wds.WebDataset(brace, shardshuffle=False)))
        _assert_equal(got, record_ref)


def test_missing_base_is_a_clear_base_error(tmp_path, record_shards, record_blobs):
    for url in record_shards.urls:  # the shards without their base
        shutil.copy(url, tmp_path)
    urls = sorted(str(p) for p in tmp_path.glob("*.tar"))
    want_hash = ndf.inspect(record_blobs[0])["base_hash"]

    with pytest.raises(ndf.NDFBaseError) as err:
        next(iter(wds.WebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)))))
    text = str(err.value)
    assert want_hash in text and "shard-000000.tar" in text and _key(0) in text
    assert not isinstance(err.value, NDFDecodeError)

    # a base error is a configuration error: the skipping handler does not swallow it
    with pytest.raises(ndf.NDFBaseError):
        list(wds.WebDataset(urls, shardshuffle=False).map(ndf_samples(), handler=SkipCounter(warn=False)))

    # as a plain .decode handler: webdataset wraps it, the cause says what is missing
    with pytest.raises(Exception) as err:
        next(iter(wds.WebDataset(urls, shardshuffle=False).decode(ndf_decoder(size=SIZE))))
    assert isinstance(err.value.__cause__, ndf.NDFBaseError) and want_hash in str(err.value.__cause__)


# --------------------------------------------------------------------------- batched decoding


def _batched(urls, batch: int, records: bool):
    ds = wds.WebDataset(urls, shardshuffle=False)
    # .decode() first (basic handlers: .cls -> int; .ndf bytes pass through), then the map
    ds = ds.decode().map(ndf_samples(ndf_read())) if records else ds.decode(ndf_read())
    return ds.to_tuple("__key__", "ndf", "cls").batched(batch)


def _unbatch(batches):
    got = {}
    for keys, images, _ in batches:
        got.update(zip(keys, images))
    return got


@pytest.mark.parametrize("records", [False, True])
def test_batched_equals_per_sample(field_shards, record_shards, field_ref, record_ref, records, monkeypatch):
    shards, ref = (record_shards, record_ref) if records else (field_shards, field_ref)
    calls = []
    real = nwd.batches.render_fields
    monkeypatch.setattr(
        nwd.batches, "render_fields", lambda fields, *a, **k: calls.append(len(fields)) or real(fields, *a, **k)
    )

    raw = list(_batched(shards.urls, 5, records))
    assert [len(b[0]) for b in raw] == [5, 5, 2]
    assert all(isinstance(f, ndf.DecodedField) for f in raw[0][1])
    # as the batches would come out of DataLoader workers: pickled, bases copied per batch
    raw = pickle.loads(pickle.dumps(raw))
    render = ndf_batch_decode(size=SIZE)
    batches = [render(b) for b in raw]
    assert calls == [5, 5, 2]  # one render_fields call per batch
    assert batches[0][1].shape == (5, 3, SIZE, SIZE)
    assert list(batches[0][2]) == [0, 1, 2, 0, 1]
    _assert_equal(_unbatch(batches), ref, atol=1e-6)


def test_batch_decode_dicts_and_lists(field_shards, field_ref):
    ds = wds.WebDataset(field_shards.urls, shardshuffle=False).decode(ndf_read())
    fields = [(s["__key__"], s["ndf"]) for s in ds]
    render = ndf_batch_decode(size=SIZE)
    images = render([f for _, f in fields])
    assert images.shape == (N, 3, SIZE, SIZE)
    out = render({"ndf": [f for _, f in fields], "other": [1, 2]})
    assert out["other"] == [1, 2]
    _assert_equal(dict(zip([k for k, _ in fields], out["ndf"])), field_ref, atol=1e-6)


# --------------------------------------------------------------------------- workers and ranks


def test_dataloader_workers_and_ranks(field_shards, field_ref, monkeypatch):
    from torch.utils.data import DataLoader

    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        ds = (
            wds.WebDataset(
                f"{_dir(field_shards)}/{BRACE}",
                shardshuffle=False,
                nodesplitter=wds.split_by_node,
                workersplitter=wds.split_by_worker,
                empty_check=False,  # 3 shards over 2 ranks x 2 workers: one worker gets none
            )
            .decode(ndf_decoder(size=SIZE))
            .to_tuple("__key__", "ndf")
        )
        seen[rank] = [(k, x) for k, x in DataLoader(ds, batch_size=None, num_workers=2)]
    keys = [k for rank in seen for k, _ in seen[rank]]
    assert sorted(keys) == sorted(field_ref) and len(keys) == N  # every sample exactly once
    assert {k for k, _ in seen[0]}.isdisjoint({k for k, _ in seen[1]})
    assert seen[0] and seen[1]
    _assert_equal({k: x for rank in seen for k, x in seen[rank]}, field_ref)


# --------------------------------------------------------------------------- remote storage


def test_s3_stream_equals_local(s3_configured, record_shards, record_ref):
    bucket = s3_configured
    fs = bucket.filesystem()
    for local in record_shards.urls + [record_shards.base_url]:
        fs.put(local, bucket.path(f"rec/{Path(local).name}"))

    local_run, _, _ = _collect(
        wds.WebDataset(record_shards.urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)))
    )
    ndf.clear_base_cache()  # the base must now come from S3, next to the shards
    ds = wds.WebDataset(bucket.url(f"rec/{BRACE}"), shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)))
    got, order, samples = _collect(ds)
    assert order == [_key(i) for i in range(N)]
    assert samples[0]["__url__"] == bucket.url("rec/shard-000000.tar")
    _assert_equal(got, local_run)
    _assert_equal(got, record_ref)


def test_write_shards_to_s3(s3_configured, record_blobs, record_ref, base):
    bucket = s3_configured
    shards = write_shards(bucket.url("w/shard-%06d.tar"), _samples(record_blobs), maxcount=PER_SHARD, base=base)
    assert shards.urls == [bucket.url(f"w/shard-{i:06d}.tar") for i in range(3)]
    assert shards.base_url == bucket.url(f"w/{ndf.base_filename(base.hash)}")
    assert sorted(Path(p).name for p in bucket.filesystem().ls(bucket.path("w"))) == sorted(
        [f"shard-{i:06d}.tar" for i in range(3)] + [ndf.base_filename(base.hash)]
    )
    ds = wds.WebDataset(shards.urls, shardshuffle=False).decode(
        ndf_decoder(size=SIZE, base_locations=[bucket.url("w")])
    )
    got, _, _ = _collect(ds)
    _assert_equal(got, record_ref)


def test_memory_scheme_roundtrip(record_blobs, record_ref, base):
    root = f"memory://ndf-test-{uuid.uuid4().hex[:8]}"
    shards = write_shards(f"{root}/shard-%06d.tar", _samples(record_blobs), maxcount=6, base=base)
    assert len(shards.urls) == 2
    ndf.clear_base_cache()
    ds = wds.WebDataset(f"{root}/shard-{{000000..000001}}.tar", shardshuffle=False).map(
        ndf_samples(ndf_decoder(size=SIZE))
    )
    got, _, _ = _collect(ds)
    _assert_equal(got, record_ref)


def test_s3_helpers(monkeypatch):
    import importlib

    gopen = importlib.import_module("webdataset.gopen")
    for scheme in ("gs", "s3", "memory"):
        monkeypatch.setitem(gopen.gopen_schemes, scheme, gopen.gopen_schemes.get(scheme, gopen.gopen_error))
    gsutil = gopen.gopen_schemes["gs"]
    assert "s3" in nds3.register_gopen_schemes()
    assert gopen.gopen_schemes["gs"] is gsutil  # webdataset's own handlers are left alone by default
    assert isinstance(gopen.gopen_schemes["s3"], nds3.FsspecOpener)
    assert nds3.register_gopen_schemes(["gs"]) == ["gs"]  # ... unless named explicitly
    assert isinstance(gopen.gopen_schemes["gs"], nds3.FsspecOpener)

    try:
        opts = nds3.configure_s3(endpoint_url="http://127.0.0.1:1", key="k", secret="s", anon=False)
        assert nds3.storage_options_for("s3://b/x.tar") == opts
        assert opts["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:1"
        assert nds3.storage_options_for("s3a://b/x.tar") == opts and nds3.storage_options_for("/local/x.tar") == {}
    finally:
        nds3.configure_s3()
    assert nds3.storage_options_for("s3://b/x.tar") == {}
    assert nds3.url_scheme("S3://b/x") == "s3" and nds3.url_scheme("x/y.tar") == ""


def test_retry_transient_is_bounded():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert nds3.retry_transient(flaky, attempts=3, backoff_s=0) == "ok" and len(calls) == 3
    calls.clear()
    with pytest.raises(nds3.StorageRetryError, match="gave up|failed after 2 attempts") as info:
        nds3.retry_transient(flaky, attempts=2, backoff_s=0, what="opening s3://b/x.tar")
    assert len(calls) == 2 and isinstance(info.value.__cause__, ConnectionResetError)
    assert info.value.url == "s3://b/x.tar" and info.value.attempts == 2

    def missing():
        calls.append(1)
        raise FileNotFoundError("s3://b/none.tar")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        nds3.retry_transient(missing, attempts=5, backoff_s=0)
    assert len(calls) == 1  # not transient: no retry


# --------------------------------------------------------------------------- errors


@pytest.fixture
def corrupt_shard(tmp_path, field_blobs):
    """Six samples; sample 3's bytes are damaged after writing (a checksum error)."""
    path = tmp_path / "bad-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i, blob in enumerate(field_blobs[:6]):
            if i == 3:
                blob = bytearray(blob)
                blob[len(blob) // 2] ^= 0xFF
                blob = bytes(blob)
            sink.write({"__key__": _key(i), "ndf": blob, "cls": i})
    return str(path)


def test_corrupt_sample_raises_naming_shard_and_key(corrupt_shard):
    ds = wds.WebDataset(corrupt_shard, shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)))
    with pytest.raises(NDFDecodeError) as err:
        list(ds)
    e = err.value
    assert (e.url, e.key, e.member) == (corrupt_shard, _key(3), "ndf")
    assert corrupt_shard in str(e) and _key(3) in str(e)
    assert isinstance(e.__cause__, ndf.NDFError) and isinstance(e, ndf.NDFError)

    # the same handler in .decode: webdataset's DecodingError, whose cause is the NDFError
    with pytest.raises(Exception) as err:
        list(wds.WebDataset(corrupt_shard, shardshuffle=False).decode(ndf_decoder(size=SIZE)))
    assert (err.value.url, err.value.key) == (corrupt_shard, _key(3))
    assert isinstance(err.value.__cause__, ndf.NDFError)


def test_corrupt_sample_skipped_and_counted(corrupt_shard):
    good = [_key(i) for i in (0, 1, 2, 4, 5)]
    counter = SkipCounter(warn=False)
    ds = wds.WebDataset(corrupt_shard, shardshuffle=False).map(ndf_samples(ndf_decoder(size=SIZE)), handler=counter)
    assert [s["__key__"] for s in ds] == good
    assert counter.count == 1 and _key(3) in counter.errors[0] and corrupt_shard in counter.errors[0]

    counter = SkipCounter(warn=False)
    ds = wds.WebDataset(corrupt_shard, shardshuffle=False).decode(ndf_decoder(size=SIZE), handler=counter)
    assert [s["__key__"] for s in ds] == good
    assert counter.count == 1 and _key(3) in counter.errors[0] and corrupt_shard in counter.errors[0]

    ds = wds.WebDataset(corrupt_shard, shardshuffle=False).map(ndf_samples(), handler=wds.warn_and_continue)
    with pytest.warns(UserWarning):
        keys = [s["__key__"] for s in ds]
    assert keys == good

    with pytest.raises(NDFDecodeError):  # more than `limit` skips: give up
        list(
            wds.WebDataset(corrupt_shard, shardshuffle=False).map(
                ndf_samples(), handler=SkipCounter(warn=False, limit=0)
            )
        )


# --------------------------------------------------------------------------- pickling, validation


def test_decoders_pickle(field_blobs, record_shards, record_blobs, base):
    blob = field_blobs[0]
    dec = ndf_decoder(size=SIZE, base_locations=[str(_dir(record_shards))])
    again = pickle.loads(pickle.dumps(dec))
    assert torch.equal(again("ndf", blob), dec("ndf", blob))
    assert torch.equal(again("ndf", record_blobs[0]), ndf.decode(record_blobs[0], size=SIZE, base=base))
    with_base = pickle.loads(pickle.dumps(ndf_decoder(size=SIZE, base=base)))
    assert torch.equal(with_base("ndf", record_blobs[1]), ndf.decode(record_blobs[1], size=SIZE, base=base))
    sample = {"__key__": "k", "__url__": "u", "ndf": blob, "cls": b"1"}
    out = pickle.loads(pickle.dumps(ndf_samples(dec)))(sample)
    assert torch.equal(out["ndf"], dec("ndf", blob)) and out["cls"] == b"1"
    for obj in (ndf_read(), ndf_batch_decode(SIZE, "cpu"), SkipCounter(), nds3.FsspecOpener()):
        assert type(pickle.loads(pickle.dumps(obj))) is type(obj)
    err = pickle.loads(pickle.dumps(NDFDecodeError("k1", "s3://b/shard.tar", "ndf", "bad crc")))
    assert (err.key, err.url, err.member) == ("k1", "s3://b/shard.tar", "ndf") and "bad crc" in str(err)


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError):
        ndf_decoder(size=0)
    with pytest.raises(ValueError):
        ndf_batch_decode(size=(4, 4, 4))
    with pytest.raises(ValueError):
        ndf_decoder(extensions=" ")
    with pytest.raises(TypeError):
        ndf_samples("pil")
    assert nwd.shard_dir("s3://b/train/shard-000001.tar") == "s3://b/train"
    assert nwd.shard_dir("shard.tar") == "." and nwd.shard_dir("/shard.tar") == "/"
    assert nwd.shard_dir("file:///shard.tar") == "file:///"


def test_decoded_batch_is_usable_as_tensor(field_shards):
    """A picklable pipeline end to end: what a training loop would see."""
    ds = wds.WebDataset(field_shards.urls, shardshuffle=False).decode(ndf_read()).to_tuple("ndf", "cls").batched(6)
    images, labels = ndf_batch_decode(size=(SIZE, 12))(next(iter(ds)))
    assert images.shape == (6, 3, SIZE, 12) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert list(labels) == [0, 1, 2, 0, 1, 2]


# --------------------------------------------------------------------------- batched entropy decoding of raw bytes


@pytest.fixture(scope="module")
def zoo_shards(tmp_path_factory, images):
    """Compact records of the shipped cifar10 base (a learned entropy model), the base next to the shards."""
    zoo = ndf.load_base("cifar10")
    blobs = [ndf.encode(im, base=zoo, level=3) for im in images]
    out = tmp_path_factory.mktemp("zoo")
    return write_shards(str(out / "shard-%06d.tar"), _samples(blobs), maxcount=PER_SHARD, base=zoo)


def test_batch_decode_of_raw_bytes_reads_each_batch_in_one_call(zoo_shards, monkeypatch):
    where = str(_dir(zoo_shards))
    ref, _, _ = _collect(wds.WebDataset(zoo_shards.urls, shardshuffle=False).decode(ndf_decoder(SIZE, base_locations=[where])))
    calls = []
    real = nwd.batches.read_fields
    monkeypatch.setattr(nwd.batches, "read_fields", lambda blobs, *a, **k: calls.append(len(blobs)) or real(blobs, *a, **k))
    ds = wds.WebDataset(zoo_shards.urls, shardshuffle=False).decode().to_tuple("__key__", "ndf", "cls").batched(5)
    raw = pickle.loads(pickle.dumps(list(ds)))  # as batches come out of DataLoader workers
    assert all(isinstance(b, bytes) for b in raw[0][1])
    batches = [ndf_batch_decode(SIZE, base_locations=[where])(b) for b in raw]
    assert calls == [5, 5, 2]  # one entropy-decoding call per batch
    assert list(batches[0][2]) == [0, 1, 2, 0, 1]  # the labels column untouched
    _assert_equal(_unbatch(batches), ref, atol=1e-5)


def test_shards_of_two_bases_in_one_directory_each_find_their_own(images, tmp_path):
    """Compact records (version 3) do not name their base: with two bases next to the shards,
    each record's CRC picks its own."""
    bases = [ndf.load_base("cifar10"), ndf.load_base("cifar10-wide")]
    sets = [
        write_shards(str(tmp_path / f"{name}-%06d.tar"), _samples([ndf.encode(im, base=b, level=3) for im in images]), maxcount=PER_SHARD, base=b)
        for name, b in zip("ab", bases)
    ]
    assert sorted(p.name for p in tmp_path.glob("*.ndfbase")) == sorted(ndf.base_filename(b.hash) for b in bases)
    ndf.clear_base_cache()
    try:
        for shards, b in zip(sets, bases):
            got, order, _ = _collect(wds.WebDataset(shards.urls, shardshuffle=False).decode(ndf_decoder(SIZE, base_locations=[str(tmp_path)])))
            ref, _, _ = _collect(wds.WebDataset(shards.urls, shardshuffle=False).decode(ndf_decoder(SIZE, base=b)))
            assert order and all(torch.equal(got[k], ref[k]) for k in order)
    finally:
        ndf.clear_base_cache()


def test_batch_decode_of_raw_bytes_errors(zoo_shards):
    ds = wds.WebDataset(zoo_shards.urls, shardshuffle=False).to_tuple("ndf", "cls").batched(4)
    blobs, cls = next(iter(ds))
    with pytest.raises(ndf.NDFBaseError, match="looked for"):
        ndf_batch_decode(SIZE)(list(blobs))  # no base given and none to look next to
    assert ndf_batch_decode(SIZE, base_locations=[str(_dir(zoo_shards))])((list(blobs), cls))[1] is cls  # raw .cls bytes left alone
    with pytest.raises(ndf.NDFFormatError, match="member 2 of the batch"):
        ndf_batch_decode(SIZE, base_locations=[str(_dir(zoo_shards))])([blobs[0], blobs[1], b"garbage", blobs[3]])
