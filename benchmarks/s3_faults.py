"""S3 reads through injected network faults: exactly once per epoch, and a clear error when
retries run out. The figures of RELIABILITY.md; ``tests/test_s3_faults.py`` is the CI size.

    python -m benchmarks.s3_faults --epochs 10 --shards 8 --per-shard 4 --rate 0.25

A moto S3 server and a fault-injecting proxy (``tests/faultproxy.py``) run on 127.0.0.1.
For each reader (``NDFWebDataset`` over ``s3://`` and HF ``load_dataset(..., streaming=True)``)
it runs ``--epochs`` epochs while the proxy fails ``--rate`` of the shard requests (GET and
HEAD) with a reset, a reset in the middle of the body, HTTP 500, HTTP 503 or a slow body;
every epoch must yield each sample exactly once with the local pixels and labels. Then every
request for one shard is reset, with the client libraries' retry settings at their defaults
and at 2 attempts, and the time to the error and its message are recorded.
Writes ``benchmarks/out/s3_faults.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import ndf_datasets as ndf

OUT = Path(__file__).resolve().parent / "out"


def _env() -> None:
    from tests.s3server import DUMMY_ENV

    for name, value in DUMMY_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"


class _Retries(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run(epochs: int, shards: int, per_shard: int, rate: float, seed: int) -> dict[str, Any]:
    import datasets
    from ndf_datasets.integrations import s3 as nds3
    from ndf_datasets.integrations.webdataset import NDFWebDataset, ndf_decoder, ndf_samples, write_shards

    from tests.faultproxy import Fault, FaultProxy, always, random_faults
    from tests.s3server import create_bucket, start_moto_server, stop_moto_server

    _env()
    faults = [Fault("reset"), Fault("reset_body", fraction=0.4), Fault("status", status=500),
              Fault("status", status=503), Fault("slow", delay_s=0.05, chunks=4)]  # fmt: skip
    server, endpoint = start_moto_server()
    retries = _Retries()
    logging.getLogger("ndf_datasets.integrations.s3").addHandler(retries)
    result: dict[str, Any] = {"epochs": epochs, "shards": shards, "samples": shards * per_shard, "rate": rate}
    try:
        bucket = create_bucket(endpoint)
        with tempfile.TemporaryDirectory() as tmp:
            n = shards * per_shard
            labels = [i % 10 for i in range(n)]
            images = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(n)]
            blobs = ndf.encode_batch(images, psnr=None, steps=3, labels=labels)
            write_shards(f"{tmp}/train-%06d.tar", ({"ndf": b, "cls": c} for b, c in zip(blobs, labels)),
                         maxcount=per_shard)  # fmt: skip
            Path(tmp, "ndf_dataset.json").write_text('{"format": "ndf-webdataset"}')
            fs = bucket.filesystem()
            for p in sorted(Path(tmp).iterdir()):
                fs.put(str(p), bucket.path(f"ds/{p.name}"))
        ref = {f"{i:08d}": (ndf.decode(b), labels[i]) for i, b in enumerate(blobs)}
        urls = [bucket.url(f"ds/train-{i:06d}.tar") for i in range(shards)]

        def exact(rows: list[tuple[str, torch.Tensor, int]]) -> bool:
            keys = [k for k, _, _ in rows]
            return sorted(keys) == sorted(ref) and all(torch.equal(x, ref[k][0]) and y == ref[k][1] for k, x, y in rows)

        def configure(proxy: FaultProxy, **options: Any) -> None:
            nds3.configure_s3(endpoint_url=proxy.url, key=bucket.key, secret=bucket.secret, region=bucket.region,
                              skip_instance_cache=True, **options)  # fmt: skip

        for reader in ("webdataset", "hf-streaming"):
            retries.messages.clear()
            with FaultProxy(endpoint, random_faults(rate, faults, seed=seed, match=".tar")) as proxy:
                configure(proxy)
                nds3.register_gopen_schemes(attempts=4, backoff_s=0.05)
                start = time.perf_counter()
                exact_epochs = 0
                try:
                    hf = datasets.load_dataset(bucket.url("ds"), split="train", streaming=True) if reader != "webdataset" else None
                    for _ in range(epochs):
                        if hf is None:
                            ds = NDFWebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=None)))
                            rows = [(s["__key__"], s["ndf"], int(s["cls"])) for s in ds]
                        else:
                            rows = [(r["key"], r["image"], r["label"]) for r in hf]
                        exact_epochs += exact(rows)
                finally:
                    nds3.configure_s3()
                    nds3.register_gopen_schemes()
                kinds: dict[str, int] = {}
                for _, _, _, kind in proxy.log:
                    kinds[kind] = kinds.get(kind, 0) + 1
                result[reader] = {
                    "exact_epochs": exact_epochs,
                    "requests": len(proxy.log),
                    "faults_by_kind": {k: v for k, v in kinds.items() if k != "ok"},
                    "retries_logged_by_ndf": len(retries.messages),
                    "seconds": round(time.perf_counter() - start, 1),
                }
        for label, options in (("client defaults", {}), ("botocore max_attempts=2", {"config_kwargs": {"retries": {"max_attempts": 2, "mode": "standard"}}})):  # noqa: E501
            retries.messages.clear()
            with FaultProxy(endpoint, always(Fault("reset"), match="train-000001")) as proxy:
                configure(proxy, **options)
                nds3.register_gopen_schemes(attempts=4, backoff_s=0.05)
                start = time.perf_counter()
                try:
                    list(NDFWebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))))
                    message = "no error"
                except nds3.StorageRetryError as exc:
                    message = str(exc)
                finally:
                    nds3.configure_s3()
                    nds3.register_gopen_schemes()
                result.setdefault("exhausted", []).append({
                    "settings": label, "seconds": round(time.perf_counter() - start, 1), "requests": len(proxy.log),
                    "error": message[:300], "ndf_retry_log": retries.messages[:4],
                })  # fmt: skip
    finally:
        logging.getLogger("ndf_datasets.integrations.s3").removeHandler(retries)
        stop_moto_server(server)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=4)
    p.add_argument("--rate", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    result = run(args.epochs, args.shards, args.per_shard, args.rate, args.seed)
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    OUT.mkdir(exist_ok=True)
    (OUT / "s3_faults.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
