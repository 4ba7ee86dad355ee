"""The real footprint of a converted dataset: bytes on disk per image, split into records, containers and base.

``ndf info OUT`` (and :func:`dataset_info`) measures what is actually stored under ``OUT``,
file by file, rather than trusting the manifest's sums:

* **records**: the bytes of the ``.ndf`` records themselves (the manifest's per-image
  statistics, which the conversion wrote from the records it encoded);
* **containers**: everything the layout adds around the records (tar headers and padding,
  gzip framing, Parquet pages and footers): the data files' bytes minus the records';
* **base**: the shared base file(s), stored once per dataset (once per split folder more in
  the ``files`` layout);
* **metadata**: the manifest, the job file, the dataset card and the per-shard statistics and indexes.

For a local folder the bytes *allocated* on disk (file-system blocks, what ``du`` counts) are
given too: for the ``files`` layout they, not the file sizes, are the real cost (a 300-byte
file takes a 4 KiB block on most file systems).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..codec import BASE_SUFFIX
from ._store import Store
from .card import CARD
from .job import JOB_FILE, MANIFEST, STATS_DIR

__all__ = ["dataset_info", "format_info", "is_dataset"]

_SHARD = re.compile(r"[A-Za-z0-9_]+-\d+\.(?:tar|tar\.gz|parquet)")


def is_dataset(location: str, storage_options: dict | None = None) -> bool:
    """Whether ``location`` is a folder or URL holding an ``ndf convert`` manifest."""
    return Store(location, storage_options).read(MANIFEST, limit=1 << 28) is not None


def _kind(name: str, layout: str) -> str:
    top = name.split("/", 1)[0]
    if name in (MANIFEST, JOB_FILE, CARD) or top == STATS_DIR:
        return "metadata"
    if name.endswith(BASE_SUFFIX):
        return "base"
    if ("/" not in name and _SHARD.fullmatch(name)) or (layout == "files" and name.endswith(".ndf")):
        return "data"
    return "other"


def dataset_info(location: str, storage_options: dict | None = None) -> dict[str, Any]:
    """What a converted dataset holds and what it costs on disk (measured from the files there).

    Raises:
        FileNotFoundError: ``location`` holds no manifest (``ndf_dataset.json``).
        ValueError: the manifest is not JSON.

    Returns:
        ``{"location", "name", "layout", "members", "compression", "images", "counts",
        "psnr", "bytes": {kind: total}, "allocated": {kind: total} | None,
        "per_image": {kind: bytes}, "data_over_records"}`` with kinds ``records``,
        ``containers``, ``data`` (records + containers), ``base``, ``metadata``, ``other``.
    """
    store = Store(location, storage_options)
    raw = store.read(MANIFEST, limit=1 << 28)
    if raw is None:
        raise FileNotFoundError(f"{store.path(MANIFEST)}: no manifest; is {store.location} a folder ndf convert wrote?")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{store.path(MANIFEST)}: not JSON ({exc})") from None
    layout = manifest.get("layout", "webdataset")
    totals = {"data": 0, "base": 0, "metadata": 0, "other": 0}
    allocated: dict[str, int] | None = dict(totals)
    for name, (size, disk) in store.sizes().items():
        kind = _kind(name, layout)
        totals[kind] += size
        if disk is None:
            allocated = None
        elif allocated is not None:
            allocated[kind] += disk
    stats = manifest.get("stats", {})
    images = int(stats.get("images", 0))
    records = int(stats.get("bytes", {}).get("total", 0))
    sizes = {"records": records, "containers": totals["data"] - records, **totals}
    per = (lambda v: round(v / images, 2)) if images else (lambda v: 0.0)
    return {
        "location": store.location,
        "name": manifest.get("name"),
        "layout": layout,
        "members": manifest.get("members", ["ndf", "cls", "json"]),
        "compression": manifest.get("compression"),
        "images": images,
        "counts": manifest.get("counts", {}),
        "psnr": stats.get("psnr", {}),
        "bytes": sizes,
        "allocated": allocated,
        "per_image": {k: per(v) for k, v in sizes.items()},
        "allocated_per_image": {k: per(v) for k, v in allocated.items()} if allocated is not None else None,
        "data_over_records": round(totals["data"] / records, 4) if records else 0.0,
    }


def format_info(info: dict[str, Any]) -> str:
    """The text ``ndf info OUT`` prints for :func:`dataset_info`'s result."""
    counts = ", ".join(f"{k} {v}" for k, v in info["counts"].items())
    psnr = info["psnr"].get("mean")
    lines = [
        f"{info['location']}: NDF dataset {info['name']!r}, {info['images']} images ({counts})",
        f"  layout        {info['layout']}, members {'+'.join(info['members'])}, compression {info['compression'] or 'none'}",
        f"  mean PSNR     {psnr:.2f} dB (measured at conversion)" if psnr is not None else "  mean PSNR     -",
        "  bytes on disk      total   per image",
    ]
    for kind in ("records", "containers", "data", "base", "metadata", "other"):
        total = info["bytes"][kind]
        if kind == "other" and not total:
            continue
        note = {"data": "  = records + containers", "base": "  (stored once, shared by every image)"}.get(kind, "")
        lines.append(f"  {kind:<12} {total:>12,} {info['per_image'][kind]:>10.1f}{note}")
    lines.append(f"  data / records: {info['data_over_records']:.3f}x")
    if info["allocated"] is not None:
        alloc = info["allocated_per_image"]
        lines.append(
            f"  allocated on disk (file-system blocks): data {info['allocated']['data']:,} B "
            f"({alloc['data']:.1f} per image), base {info['allocated']['base']:,} B, metadata {info['allocated']['metadata']:,} B"
        )
    return "\n".join(lines)
