"""One unit (shard) of a conversion: encoding its images, and checking a finished one on resume.

A unit's output is a pure function of its images and the settings, so a finished unit is
verified (read back completely, byte-compared) and kept, and a missing or damaged one is
encoded again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from ..codec import NDFError, SharedBase, encode_batch
from ..codec import format as fmt
from ._store import Store
from .job import _MAX_SHARD_BYTES, UNLABELLED, ConvertSettings, _json_bytes, _Unit
from .manifest import _stats
from .shards import Sample, parse_shard, shard_bytes
from .sources import Source, Split


def _class_name(source: Source, label: int | None) -> str:
    if label is None:
        return UNLABELLED
    return source.classes[label] if label < len(source.classes) else str(label)


def _file_name(source: Source, unit: _Unit, i: int, label: int | None) -> str:
    return f"{unit.split}/{_class_name(source, label)}/{i:06d}.ndf"


def _samples(source: Source, unit: _Unit, blobs: Sequence[bytes]) -> list[Sample]:
    split = source.splits[unit.split]
    labels = split.labels[unit.start : unit.stop]
    names = split.names(unit.start, unit.stop)
    out = []
    for i, blob, label, name in zip(range(unit.start, unit.stop), blobs, labels, names):
        meta: dict[str, Any] = {"index": i, "split": unit.split, "label": label}
        if label is not None:
            meta["class"] = _class_name(source, label)
        if name is not None:
            meta["file"] = name
        out.append(Sample(f"{i:06d}", blob, label, meta))
    return out


def _finished(store: Store, source: Source, unit: _Unit, base: SharedBase, settings: ConvertSettings) -> dict | None:
    """The unit's stats if its output is complete and valid (re-writing a missing stats file), else ``None``.

    A shard must read back completely and be exactly the shard this job would write for the
    records it holds; every record must be of ``base``. In the ``files`` layout the stats
    file is the completion mark and every file it lists must be present and valid.
    """
    labels = source.splits[unit.split].labels[unit.start : unit.stop]
    try:
        if settings.layout == "webdataset":
            data = store.read(f"{unit.name}.tar", limit=_MAX_SHARD_BYTES)
            if data is None:
                return None
            rows = parse_shard(data, store.path(f"{unit.name}.tar"))
            blobs = [parts.get("ndf", b"") for _, parts in rows]
            if len(blobs) != unit.stop - unit.start or shard_bytes(_samples(source, unit, blobs)) != data:
                return None
            extra = {"shard": f"{unit.name}.tar", "shard_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        else:
            raw = store.read(unit.stats_name, limit=1 << 28)
            if raw is None:
                return None
            files = json.loads(raw).get("files")
            if files != [_file_name(source, unit, i, label) for i, label in zip(range(unit.start, unit.stop), labels)]:
                return None
            blobs = [store.read(f) for f in files]
            if any(b is None for b in blobs):
                return None
            extra = {"files": files}
        for i, b in enumerate(blobs):
            c = fmt.parse(b, f"{unit.name}/{i}")
            if c.kind != fmt.KIND_RECORD or c.base_hash != base.hash:
                return None
        stats = _stats(unit, blobs, labels, extra)
    except (NDFError, ValueError, AttributeError):
        return None
    if store.read(unit.stats_name, limit=1 << 28) != _json_bytes(stats, compact=True):
        if settings.layout == "files":
            return None
        store.write(unit.stats_name, _json_bytes(stats, compact=True))
    return stats


class _Progress:
    """tqdm bar over images: rate (images/s), ETA, mean PSNR and bytes of what was encoded."""

    def __init__(self, total: int, done: int, enabled: bool, rank: int, world: int) -> None:
        from tqdm.auto import tqdm

        desc = "encoding" if world == 1 else f"encoding [rank {rank}/{world}]"
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=desc,
            unit="img",
            disable=not enabled,
            position=rank if world > 1 else None,
            dynamic_ncols=True,
        )
        self.psnr_sum = self.bytes_sum = 0.0
        self.n = 0

    def update(self, blobs: Sequence[bytes]) -> None:
        for b in blobs:
            c = fmt.parse(b)
            self.psnr_sum += c.fit_psnr or 0.0
            self.bytes_sum += len(b)
        self.n += len(blobs)
        self.bar.set_postfix(
            psnr=f"{self.psnr_sum / max(1, self.n):.2f}dB",
            bytes=f"{self.bytes_sum / max(1, self.n):.0f}",
            refresh=False,
        )
        self.bar.update(len(blobs))

    def close(self) -> None:
        self.bar.close()


def _encode_unit(
    store: Store, source: Source, unit: _Unit, base: SharedBase, settings: ConvertSettings, device: str, bar: _Progress
) -> dict:
    split: Split = source.splits[unit.split]
    labels = split.labels[unit.start : unit.stop]
    images = split.images(unit.start, unit.stop)
    blobs: list[bytes] = []
    for c in range(0, len(images), settings.batch_size):
        chunk = encode_batch(
            images[c : c + settings.batch_size],
            psnr=settings.psnr,
            base=base,
            labels=labels[c : c + settings.batch_size],
            steps=settings.steps,
            seed=settings.seed,
            device=device,
            batch_size=settings.batch_size,
            early_stop=settings.early_stop,
        )
        blobs += chunk
        bar.update(chunk)
    if settings.layout == "webdataset":
        data = shard_bytes(_samples(source, unit, blobs))
        extra = {"shard": f"{unit.name}.tar", "shard_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        stats = _stats(unit, blobs, labels, extra)
        store.write(
            unit.stats_name, _json_bytes(stats, compact=True)
        )  # the stats first: the manifest can always be rebuilt
        store.write(f"{unit.name}.tar", data)
        return stats
    files = [_file_name(source, unit, i, label) for i, label in zip(range(unit.start, unit.stop), labels)]
    for name, blob in zip(files, blobs):
        store.write(name, blob)
    stats = _stats(unit, blobs, labels, {"files": files})
    store.write(unit.stats_name, _json_bytes(stats, compact=True))  # the unit's completion mark
    return stats
