"""Every single-byte flip and every truncation of a small shard, through each reader, in each layout.

    python -m benchmarks.shard_corruption                      # exhaustive, all readers, the tar layout
    python -m benchmarks.shard_corruption --stride 7 --readers ndf-wds
    python -m benchmarks.shard_corruption --layout compact     # ndf convert's default: one member, .tar.gz
    python -m benchmarks.shard_corruption --layout parquet --readers hf-parquet

Layouts (``--layout``): ``tar`` (what :func:`~ndf_datasets.integrations.webdataset.write_shards`
writes: ``.ndf`` + ``.cls`` members, pax headers), ``compact`` (``ndf convert``'s default:
one ``.ndf`` member per sample, gzip) and ``parquet`` (``ndf convert --format parquet``).

The shard holds a few ``.ndf`` samples (standalone fields whose headers carry their label)
with ``.cls`` members, as :func:`~ndf_datasets.integrations.webdataset.write_shards` writes
them. Each mutation (byte XOR ``--xor`` at every position; every proper prefix) is read
through a reader, in ``raise`` mode and in skip-and-count mode, and classified:

* ``error``     -- raise mode raised (the message is checked for shard, member and offset);
* ``skipped``   -- skip mode skipped and counted at least one sample or shard;
* ``identical`` -- the output equals the clean shard's (keys, labels, pixels bit for bit):
  the byte was padding, or past the end-of-archive marker;
* ``SILENT``    -- anything else: fewer samples, other labels or pixels, no error. Must be 0.

Readers: ``ndf-wds`` (``NDFWebDataset(...).map(ndf_samples(ndf_decoder(size=None)))``),
``wds`` (plain ``wds.WebDataset``, same map: the reference that shows what tarfile drops)
and ``hf`` (the HF shard reader ``ndf_datasets.data.shards.iter_shard`` + ``NDFImage`` decode,
i.e. what ``load_dataset(<shards>)`` runs). Writes ``benchmarks/out/shard_corruption.json``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ndf_datasets as ndf

OUT = Path(__file__).resolve().parent / "out"

Sample = tuple[str, int | None, bytes]  # key, label, pixel bytes
Result = tuple[list[Sample], int]  # samples read, errors skipped (skip mode)


def make_shard(directory: Path, count: int = 3, size: int = 6, layout: str = "tar") -> tuple[Path, list[Sample]]:
    """Write a shard of ``count`` tiny labelled fields; returns its path and the clean reading."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
    labels = [int(i % 10) for i in range(count)]
    blobs = ndf.encode_batch(images, psnr=None, steps=3, labels=labels)
    if layout == "tar":
        from ndf_datasets.integrations.webdataset import write_shards

        shards = write_shards(str(directory / "train-%06d.tar"), ({"ndf": b, "cls": c} for b, c in zip(blobs, labels)))
        path = Path(shards.urls[0])
    else:
        from ndf_datasets.data import parquet, shards

        samples = [shards.Sample(f"{i:08d}", b, c) for i, (b, c) in enumerate(zip(blobs, labels))]
        if layout == "compact":
            path = directory / "train-000000.tar.gz"
            path.write_bytes(shards.shard_bytes(samples, shards.COMPACT, compress=True))
        else:
            path = directory / "train-000000.parquet"
            path.write_bytes(parquet.parquet_bytes(samples, [str(c) for c in range(10)]))
    pixels = ndf.decode_batch(blobs)
    return path, [(f"{i:08d}", labels[i], _pixels(pixels[i])) for i in range(count)]


def _pixels(x: torch.Tensor) -> bytes:
    return x.contiguous().numpy().tobytes()


def _label(value: Any) -> int | None:
    if isinstance(value, (bytes, bytearray)):
        try:
            return int(value.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return -1
    return value


# ----------------------------------------------------------------------------- readers


def read_wds(path: Path, strict: bool, skip: bool) -> Result:
    import webdataset as wds
    from ndf_datasets.integrations.webdataset import NDFWebDataset, SkipCounter, ndf_decoder, ndf_samples

    counter = SkipCounter(warn=False) if skip else None
    handler = counter if skip else wds.reraise_exception
    cls = NDFWebDataset if strict else wds.WebDataset
    ds = cls(str(path), shardshuffle=False, handler=handler, empty_check=False).map(
        ndf_samples(ndf_decoder(size=None)), handler=handler
    )
    out = [(s["__key__"], _label(s.get("cls")), _pixels(s["ndf"])) for s in ds]
    return out, counter.count if counter else 0


def read_hf(path: Path, strict: bool, skip: bool) -> Result:
    """What ``load_dataset(<shard folder>)`` runs per shard: the builder's ``iter_shard`` and
    ``_example`` (rows), then ``NDFImage`` decoding."""
    from ndf_datasets.integrations.hf import NDFImage, skipped_rows
    from ndf_datasets.integrations.hf.builder import _example, iter_shard

    feature = NDFImage(size=None, on_error="skip" if skip else "raise")
    before = skipped_rows()[0]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, parts in iter_shard(str(path)):
            row = _example(str(path), key, parts)
            x = feature.decode_example(row["image"])
            if x is not None:
                out.append((row["key"], row["label"], _pixels(x)))
    return out, skipped_rows()[0] - before


def read_hf_parquet(path: Path, skip: bool, sha256: str | None) -> Result:
    """What ``load_dataset(<folder>)`` runs per Parquet shard: the builder's rows, then ``NDFImage`` decoding."""
    from ndf_datasets.integrations.hf import NDFImage, skipped_rows
    from ndf_datasets.integrations.hf.rows import parquet_rows

    feature = NDFImage(size=None, on_error="skip" if skip else "raise")
    before = skipped_rows()[0]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in parquet_rows(str(path), {}, sha256):
            x = feature.decode_example(row["image"])
            if x is not None:
                out.append((row["key"], row["label"], _pixels(x)))
    return out, skipped_rows()[0] - before


#: the SHA-256 of the clean Parquet shard, as the manifest records it (set by :func:`run`)
CLEAN_SHA256: dict[str, str] = {}

READERS: dict[str, Callable[[Path, bool], Result]] = {
    "ndf-wds": lambda p, skip: read_wds(p, True, skip),
    "wds": lambda p, skip: read_wds(p, False, skip),
    "hf": lambda p, skip: read_hf(p, True, skip),
    "hf-parquet": lambda p, skip: read_hf_parquet(p, skip, CLEAN_SHA256.get(p.name)),
    "hf-parquet-nosha": lambda p, skip: read_hf_parquet(p, skip, None),
}
#: the readers of each layout
LAYOUT_READERS = {"tar": ["ndf-wds", "wds", "hf"], "compact": ["ndf-wds", "wds", "hf"], "parquet": ["hf-parquet", "hf-parquet-nosha"]}


# ----------------------------------------------------------------------------- the campaign


@dataclass
class Tally:
    """Outcomes of one reader over one family of mutations."""

    counts: dict[str, int] = field(default_factory=lambda: {"error": 0, "skipped": 0, "identical": 0, "SILENT": 0})
    errors_naming_shard_member_offset: int = 0
    silent_examples: list[str] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)


def _names_everything(exc: BaseException, path: Path) -> bool:
    """The message names the shard, a member (a Parquet shard: the row group and column, or its footer) and a byte offset."""
    text = str(exc)
    for cause in (exc.__cause__, exc.__context__):
        if cause is not None:
            text += " | " + str(cause)
    where = ("member", ".ndf", "row group", "column", "footer")
    return path.name in text and any(w in text for w in where) and "byte" in text


def classify(reader: Callable[[Path, bool], Result], path: Path, clean: list[Sample], tally: Tally, what: str) -> str:
    """Read the (mutated) shard at ``path`` in both modes and record the outcome."""
    try:
        samples, _ = reader(path, False)
    except Exception as exc:  # noqa: BLE001 - any error is a detection; its message is checked
        if _names_everything(exc, path):
            tally.errors_naming_shard_member_offset += 1
        if len(tally.error_examples) < 5:
            tally.error_examples.append(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
        try:
            samples, skipped = reader(path, True)
        except Exception:  # noqa: BLE001 - skip mode may still raise (e.g. a shard that is not a tar at all)
            skipped = 1
        outcome = "error" if skipped or samples == clean else "SILENT"
        if outcome == "SILENT" and len(tally.silent_examples) < 5:
            tally.silent_examples.append(f"{what}: skip mode read {len(samples)} samples and counted nothing")
    else:
        outcome = "identical" if samples == clean else "SILENT"
        if outcome == "SILENT" and len(tally.silent_examples) < 5:
            tally.silent_examples.append(f"{what}: read {len(samples)}/{len(clean)} samples, no error")
    tally.counts[outcome] += 1
    return outcome


def run(
    readers: list[str], workdir: Path, stride: int = 1, xor: int = 0xFF, count: int = 3, layout: str = "tar"
) -> dict[str, Any]:
    """Flip and truncate the shard for each reader; returns the tallies."""
    import hashlib

    path, clean = make_shard(workdir, count, layout=layout)
    data = path.read_bytes()
    CLEAN_SHA256[path.name] = hashlib.sha256(data).hexdigest()
    bad = workdir / "mutated" / path.name
    bad.parent.mkdir(exist_ok=True)
    result: dict[str, Any] = {
        "layout": layout, "shard_bytes": len(data), "samples": count, "stride": stride, "xor": xor, "readers": {},
    }  # fmt: skip
    for name in readers:
        reader = READERS[name]
        assert reader(path, False)[0] == clean, f"{name}: the clean shard does not read back"
        flips, cuts = Tally(), Tally()
        start = time.perf_counter()
        for pos in range(0, len(data), stride):
            mutated = bytearray(data)
            mutated[pos] ^= xor
            bad.write_bytes(mutated)
            classify(reader, bad, clean, flips, f"flip at byte {pos}")
        for n in range(0, len(data), stride):
            bad.write_bytes(data[:n])
            classify(reader, bad, clean, cuts, f"truncated to {n} bytes")
        result["readers"][name] = {
            "flips": flips.__dict__,
            "truncations": cuts.__dict__,
            "seconds": round(time.perf_counter() - start, 1),
        }
    return result


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layout", choices=list(LAYOUT_READERS), default="tar")
    p.add_argument("--readers", nargs="+", default=None, choices=list(READERS), help="default: the layout's readers")
    p.add_argument("--stride", type=int, default=1, help="test every N-th position / length")
    p.add_argument("--xor", type=lambda v: int(v, 0), default=0xFF)
    p.add_argument("--samples", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        readers = args.readers or LAYOUT_READERS[args.layout]
        result = run(readers, Path(tmp), args.stride, args.xor, args.samples, args.layout)
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    OUT.mkdir(exist_ok=True)
    name = "shard_corruption.json" if args.layout == "tar" else f"shard_corruption_{args.layout}.json"
    (OUT / name).write_text(json.dumps(result, indent=2))
    for name, r in result["readers"].items():
        for family in ("flips", "truncations"):
            t = r[family]
            errors = t["counts"]["error"]
            print(
                f"{name:8s} {family:11s} {t['counts']}  errors naming shard+member+offset: "
                f"{t['errors_naming_shard_member_offset']}/{errors}"
            )
            for ex in t["silent_examples"][:2]:
                print(f"{'':8s}   SILENT e.g. {ex}")
    print(f"{args.layout} shard of {result['shard_bytes']} bytes, {result['samples']} samples; stride {result['stride']}")


if __name__ == "__main__":
    main()
