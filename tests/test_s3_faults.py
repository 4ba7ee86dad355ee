"""S3 under network faults: resets, HTTP 500/503 and slow bodies between the readers and moto.

A fault-injecting proxy (:mod:`tests.faultproxy`, 127.0.0.1) sits between the S3 client
and the moto server. Ten epochs of streaming WebDataset shards (``NDFWebDataset`` through
the ``s3://`` gopen handler) and of HF streaming (``load_dataset(s3://..., streaming=True)``)
must each deliver every sample exactly once, with the same pixels and labels as a local
read, while the proxy fails about a quarter of the shard requests. When every request
fails, the error must name the URL and the attempts, within a bounded time.

The epochs run on every shard layout (:mod:`tests.layouts`): WebDataset's own tar, ``ndf
convert``'s compact ``.tar.gz`` and (HF only) Parquet.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch
from ndf_datasets.integrations import s3 as nds3
from ndf_datasets.integrations.webdataset import NDFWebDataset, ndf_decoder, ndf_samples

import ndf_datasets as ndf

from .conftest import make_image
from .faultproxy import Fault, FaultProxy, always, random_faults
from .layouts import LAYOUTS, TAR_LAYOUTS, write_layout
from .s3server import s3_bucket, s3_env, s3_server  # noqa: F401  (pytest fixtures)

EPOCHS = 10
SHARDS, PER_SHARD = 4, 3
FAULTS = [
    Fault("reset"),
    Fault("reset_body", fraction=0.4),
    Fault("status", status=500),
    Fault("status", status=503),
    Fault("slow", delay_s=0.05, chunks=4),
]


@pytest.fixture(scope="module")
def encoded():
    images = [make_image(8, 8, 3, seed=i) for i in range(SHARDS * PER_SHARD)]
    labels = [i % 5 for i in range(len(images))]
    blobs = ndf.encode_batch(images, psnr=None, steps=5, labels=labels)
    return blobs, labels, {f"{i:08d}": (ndf.decode(b), labels[i]) for i, b in enumerate(blobs)}


@pytest.fixture(scope="module", params=LAYOUTS)
def dataset(request, encoded, tmp_path_factory):
    """Local shards of labelled standalone fields in one layout, and their reference decode."""
    blobs, labels, ref = encoded
    out = tmp_path_factory.mktemp(f"s3faults-{request.param}")
    urls = write_layout(out, blobs, labels, PER_SHARD, request.param)
    (out / "ndf_dataset.json").write_text(json.dumps({"format": "ndf-webdataset"}))
    return urls, out, ref, request.param


@pytest.fixture
def remote(dataset, s3_bucket):  # noqa: F811
    urls, out, ref, layout = dataset
    fs = s3_bucket.filesystem()
    for path in sorted(out.iterdir()):
        fs.put(str(path), s3_bucket.path(f"ds/{path.name}"))
    return s3_bucket, [s3_bucket.url(f"ds/{p.rsplit('/', 1)[-1]}") for p in urls], ref, layout


def _tar_only(layout: str) -> None:
    if layout not in TAR_LAYOUTS:
        pytest.skip("WebDataset reads tar shards")


def _configure(bucket, proxy: FaultProxy, **options) -> None:
    nds3.configure_s3(
        endpoint_url=proxy.url, key=bucket.key, secret=bucket.secret, region=bucket.region,
        skip_instance_cache=True, **options,
    )  # fmt: skip


def _check_epoch(rows: list[tuple[str, torch.Tensor, int]], ref: dict) -> None:
    keys = [k for k, _, _ in rows]
    assert sorted(keys) == sorted(ref) and len(keys) == len(set(keys)), "every sample exactly once"
    for key, x, label in rows:
        assert torch.equal(x, ref[key][0]) and label == ref[key][1], key


def _retry_waits(caplog) -> list[float]:
    return [float(r.getMessage().rsplit(" in ", 1)[1].split()[0]) for r in caplog.records if "retry" in r.getMessage()]


@pytest.mark.slow
def test_webdataset_ten_epochs_through_faults(remote, s3_server, caplog):  # noqa: F811
    bucket, urls, ref, layout = remote
    _tar_only(layout)
    plan = random_faults(0.25, FAULTS, seed=1, match="train-")
    caplog.set_level(logging.WARNING, logger="ndf_datasets.integrations.s3")
    with FaultProxy(s3_server, plan) as proxy:
        _configure(bucket, proxy)
        nds3.register_gopen_schemes(attempts=4, backoff_s=0.02)
        try:
            for epoch in range(EPOCHS):
                ds = NDFWebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=None)))
                _check_epoch([(s["__key__"], s["ndf"], int(s["cls"])) for s in ds], ref)
        finally:
            nds3.configure_s3()
            nds3.register_gopen_schemes()
    kinds = {k for _, _, _, k in proxy.log}
    assert {"reset", "reset_body", "status500", "status503", "slow"} <= kinds, kinds
    assert proxy.faults() >= 10


@pytest.mark.slow
def test_hf_streaming_ten_epochs_through_faults(remote, s3_server):  # noqa: F811
    import datasets

    bucket, urls, ref, _ = remote
    plan = random_faults(0.25, FAULTS, seed=2, match="train-")
    with FaultProxy(s3_server, plan) as proxy:
        _configure(bucket, proxy)
        try:
            ds = datasets.load_dataset(bucket.url("ds"), split="train", streaming=True)
            for epoch in range(EPOCHS):
                _check_epoch([(r["key"], r["image"], r["label"]) for r in ds], ref)
        finally:
            nds3.configure_s3()
    assert proxy.faults() >= 10 and len({k for _, _, _, k in proxy.log} - {"ok"}) >= 4


def test_exhausted_retries_name_the_url_and_attempts(remote, s3_server, caplog):  # noqa: F811
    bucket, urls, ref, layout = remote
    _tar_only(layout)
    caplog.set_level(logging.WARNING, logger="ndf_datasets.integrations.s3")
    with FaultProxy(s3_server, always(Fault("reset"), match="train-000001")) as proxy:
        # botocore's own retries stay on (2 attempts per request; its default of 5 with jittered
        # backoff made this take 40 s, measured in RELIABILITY.md): the layers multiply
        _configure(bucket, proxy, config_kwargs={"retries": {"max_attempts": 2, "mode": "standard"}})
        nds3.register_gopen_schemes(attempts=4, backoff_s=0.05)
        start = time.monotonic()
        try:
            with pytest.raises(nds3.StorageRetryError) as info:
                list(NDFWebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))))
        finally:
            nds3.configure_s3()
            nds3.register_gopen_schemes()
        elapsed = time.monotonic() - start
    err = info.value
    assert err.url == urls[1] and err.attempts == 4 and urls[1] in str(err) and "4 attempts" in str(err)
    assert elapsed < 30
    assert proxy.faults("reset") >= 8 and proxy.faults() == len([e for e in proxy.log if "train-000001" in e[2]])
    waits = _retry_waits(caplog)
    assert waits[:3] == [0.05, 0.1, 0.2], waits  # exponential backoff, logged


def test_reader_resumes_mid_shard_after_the_client_gives_up(remote, s3_server, caplog):  # noqa: F811
    """Six resets in a row in the middle of a shard outlast s3fs's own retries; the reader
    reopens the object, seeks to the byte where it broke and the epoch is still exact."""
    bucket, urls, ref, layout = remote
    if layout != "tar":  # the S3 reader's resume does not depend on the layout, only on the shard's size
        pytest.skip("a compact shard of 3 records is one 4 KiB block: there is no middle to resume at")

    def plan(req):
        if req.method == "GET" and "train-000002" in req.path and 2 <= req.index_for_path < 8:
            return Fault("reset_body", fraction=0.3)
        return None

    caplog.set_level(logging.WARNING, logger="ndf_datasets.integrations.s3")
    with FaultProxy(s3_server, plan) as proxy:
        _configure(bucket, proxy, default_block_size=4096, config_kwargs={"retries": {"max_attempts": 1}})
        nds3.register_gopen_schemes(attempts=3, backoff_s=0.02)
        try:
            ds = NDFWebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=None)))
            _check_epoch([(s["__key__"], s["ndf"], int(s["cls"])) for s in ds], ref)
        finally:
            nds3.configure_s3()
            nds3.register_gopen_schemes()
    assert proxy.faults("reset_body") == 6
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"reading {urls[2]} at byte ")]
    assert resumed and int(resumed[0].split(" at byte ")[1].split(":")[0]) > 0, resumed
