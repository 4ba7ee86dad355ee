"""What a conversion reports: the per-unit statistics files and the manifest (written last).

``OUT/stats/<unit>.json`` lists the keys, labels, PSNR (measured by the conversion on the
decoded records) and bytes of every record of a unit; ``OUT/ndf_dataset.json``
(:data:`~ndf_datasets.data.job.MANIFEST`) sums them up per split, with the layout, the base,
the settings, the source and the **footprint** (bytes on disk per image, split into records,
containers and base), and is what the loaders read.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from ..codec import SharedBase, base_filename
from ._store import Store
from .job import JOB_FILE, ConvertSettings, _Unit, _versions
from .sources import Source


def _stats(
    unit: _Unit, blobs: Sequence[bytes], labels: Sequence[int | None], psnrs: Sequence[float], extra: dict[str, Any]
) -> dict[str, Any]:
    """The statistics file of a unit (a pure function of its records and their measured PSNR)."""
    return {
        "name": unit.name,
        "split": unit.split,
        "index": unit.index,
        "start": unit.start,
        "count": len(blobs),
        "keys": [f"{i:06d}" for i in range(unit.start, unit.stop)],
        "labels": list(labels),
        "psnr": list(psnrs),
        "bytes": [len(b) for b in blobs],
        **extra,
    }



def _below(psnrs: Sequence[float], settings: ConvertSettings) -> int:
    """Images whose measured PSNR misses the conversion's target (the base could not reach it);
    with a mean target, all of them when their mean misses it, else those under the floor."""
    target, floor = settings.psnr, settings.min_psnr
    if target is None:
        return 0
    if settings.mean_psnr:
        if psnrs and float(np.mean(psnrs)) + 5e-3 < target:
            return len(psnrs)
        target = floor if floor is not None else -np.inf
    return int(sum(1 for p in psnrs if p + 5e-3 < target))


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "min": 0.0, "max": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 4), "min": round(float(arr.min()), 4), "max": round(float(arr.max()), 4)}


def _manifest(
    store: Store,
    source: Source,
    settings: ConvertSettings,
    units: Sequence[_Unit],
    base: SharedBase,
    name: str,
    counts: dict[str, int],
) -> dict[str, Any]:
    splits: dict[str, Any] = {}
    all_psnr: list[float] = []
    all_bytes: list[int] = []
    pixels = base.arch.height * base.arch.width
    for split, n in counts.items():
        entries, psnr, nbytes, labels = [], [], [], []
        for unit in (u for u in units if u.split == split):
            raw = store.read(unit.stats_name, limit=1 << 28)
            if raw is None:
                raise FileNotFoundError(f"{store.path(unit.stats_name)} is missing: shard {unit.name} did not finish")
            st = json.loads(raw)
            psnr += [p or 0.0 for p in st["psnr"]]
            nbytes += st["bytes"]
            labels += st["labels"]
            entry = {"name": unit.name, "stats": unit.stats_name, "count": st["count"], "bytes": sum(st["bytes"])}
            entry["psnr_mean"] = _summary(st["psnr"])["mean"]
            if "sha256" in st:
                entry.update(shard=st["shard"], shard_bytes=st["shard_bytes"], sha256=st["sha256"])
            if settings.layout == "webdataset":
                entry["index"] = unit.index_name
            entries.append(entry)
        info: dict[str, Any] = {
            "num_examples": n,
            "label_counts": [labels.count(k) for k in range(len(source.classes))],
            "unlabeled": labels.count(None),
            "psnr": _summary(psnr),
            "below_target": _below(psnr, settings),
            "bytes": {**_summary(nbytes), "total": int(sum(nbytes))},
            "shard_stats": entries,
        }
        if settings.layout != "files":
            info["shards"] = [e["shard"] for e in entries]
        else:
            info["root"] = split
        splits[split] = info
        all_psnr += psnr
        all_bytes += nbytes
    base_bytes = len(base.to_bytes())
    metadata = sum(len(store.read(u.stats_name, limit=1 << 28) or b"") for u in units) + len(store.read(JOB_FILE) or b"")
    if settings.layout == "webdataset":
        metadata += sum(len(store.read(u.index_name, limit=1 << 28) or b"") for u in units)
    data = sum(e.get("shard_bytes", e["bytes"]) for info in splits.values() for e in info["shard_stats"])
    return {
        "name": name,
        "format": _FORMATS[settings.layout],
        "version": 2,
        "layout": settings.layout,
        "members": list(settings.members) if settings.layout != "files" else ["ndf"],
        "compression": _compression(settings),
        "classes": list(source.classes),
        "base": base_filename(base.hash),
        "base_hash": base.hash.hex(),
        "counts": dict(counts),
        "splits": splits,
        "stats": {
            "images": len(all_bytes),
            "psnr": _summary(all_psnr),
            "below_target": _below(all_psnr, settings),
            "bytes": {**_summary(all_bytes), "total": int(sum(all_bytes))},
            "bpp": round(8.0 * float(np.mean(all_bytes)) / pixels, 4) if all_bytes and pixels else 0.0,
        },
        "footprint": footprint(len(all_bytes), int(sum(all_bytes)), data, base_bytes, metadata),
        "build": settings.to_json(),
        "source": source.describe(),
        "versions": _versions(),
    }


_FORMATS = {"webdataset": "ndf-webdataset", "parquet": "ndf-parquet", "files": "ndf-imagefolder"}


def _compression(settings: ConvertSettings) -> str | None:
    if settings.layout == "files" or not settings.compress:
        return None
    return "gzip" if settings.layout == "webdataset" else "zstd"


def footprint(images: int, records: int, data: int, base: int, metadata: int) -> dict[str, Any]:
    """Bytes on disk, total and per image: records, containers (shard bytes around them), base, metadata.

    Args:
        images: number of images.
        records: bytes of all records.
        data: bytes of the files that hold them (the shards; the record files in the
            ``files`` layout, where file-system blocks are not counted: ``ndf info`` adds them).
        base: bytes of the shared base (stored once).
        metadata: bytes of the statistics and job files (the manifest itself not included).
    """
    per = (lambda v: round(v / images, 2)) if images else (lambda v: 0.0)
    bytes_ = {"records": records, "containers": data - records, "data": data, "base": base, "metadata": metadata}
    return {
        "images": images,
        "bytes": bytes_,
        "per_image": {k: per(v) for k, v in bytes_.items()},
        "data_over_records": round(data / records, 4) if records else 0.0,
    }
