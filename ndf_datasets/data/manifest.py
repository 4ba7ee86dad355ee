"""What a conversion reports: the per-unit statistics files and the manifest (written last).

``OUT/stats/<unit>.json`` lists the keys, labels, PSNR and bytes of every record of a unit;
``OUT/ndf_dataset.json`` (:data:`~ndf_datasets.data.job.MANIFEST`) sums them up per split,
with the base, the settings and the source, and is what the loaders read.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from ..codec import SharedBase, base_filename
from ..codec import format as fmt
from ._store import Store
from .job import ConvertSettings, _Unit, _versions
from .sources import Source


def _stats(unit: _Unit, blobs: Sequence[bytes], labels: Sequence[int | None], extra: dict[str, Any]) -> dict[str, Any]:
    """The statistics file of a unit (a pure function of its records)."""
    psnrs = [fmt.parse(b, f"{unit.name}/{i}").fit_psnr for i, b in enumerate(blobs)]
    return {
        "name": unit.name,
        "split": unit.split,
        "index": unit.index,
        "start": unit.start,
        "count": len(blobs),
        "keys": [f"{i:06d}" for i in range(unit.start, unit.stop)],
        "labels": list(labels),
        "psnr": psnrs,
        "bytes": [len(b) for b in blobs],
        **extra,
    }



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
            entries.append(entry)
        info: dict[str, Any] = {
            "num_examples": n,
            "label_counts": [labels.count(k) for k in range(len(source.classes))],
            "unlabeled": labels.count(None),
            "psnr": _summary(psnr),
            "bytes": {**_summary(nbytes), "total": int(sum(nbytes))},
            "shard_stats": entries,
        }
        if settings.layout == "webdataset":
            info["shards"] = [e["shard"] for e in entries]
        else:
            info["root"] = split
        splits[split] = info
        all_psnr += psnr
        all_bytes += nbytes
    return {
        "name": name,
        "format": "ndf-webdataset" if settings.layout == "webdataset" else "ndf-imagefolder",
        "version": 1,
        "layout": settings.layout,
        "classes": list(source.classes),
        "base": base_filename(base.hash),
        "base_hash": base.hash.hex(),
        "counts": dict(counts),
        "splits": splits,
        "stats": {
            "images": len(all_bytes),
            "psnr": _summary(all_psnr),
            "bytes": {**_summary(all_bytes), "total": int(sum(all_bytes))},
            "bpp": round(8.0 * float(np.mean(all_bytes)) / pixels, 4) if all_bytes and pixels else 0.0,
        },
        "build": settings.to_json(),
        "source": source.describe(),
        "versions": _versions(),
    }
