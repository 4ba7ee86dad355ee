"""One unit (shard) of a conversion: encoding its images, and checking a finished one on resume.

A unit's output is a pure function of its images and the settings, so a finished unit is
verified (read back completely, byte-compared, every record checked against the base) and
kept, and a missing or damaged one is encoded again.

The per-image PSNR in the statistics is what this conversion *measured*: the records are
decoded (with their base, as a loader would) and compared with the source images. Nothing
here reads a PSNR or a label out of record bytes; labels come from the source.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any, Sequence

import numpy as np
import torch

from ..codec import NDFError, SharedBase, encode_batch, read_fields, render_fields
from ._store import Store
from .job import _MAX_SHARD_BYTES, UNLABELLED, ConvertSettings, _json_bytes, _Unit
from .manifest import _stats
from .parquet import parquet_bytes, read_parquet
from .shardindex import MAX_INDEX_BYTES
from .shards import Sample, parse_shard, shard_layout
from .sources import Source, Split

#: records decoded at once when measuring PSNR
_MEASURE_BATCH = 256


def _class_name(source: Source, label: int | None) -> str:
    if label is None:
        return UNLABELLED
    return source.classes[label] if label < len(source.classes) else str(label)


def _file_name(source: Source, unit: _Unit, i: int, label: int | None) -> str:
    return f"{unit.split}/{_class_name(source, label)}/{i:06d}.ndf"


def _shard_file(unit: _Unit, settings: ConvertSettings) -> str:
    return f"{unit.name}{settings.shard_suffix}"


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


def _shard_data(
    source: Source, unit: _Unit, blobs: Sequence[bytes], base: SharedBase, settings: ConvertSettings
) -> tuple[bytes, bytes | None]:
    """The bytes of the unit's shard (``webdataset`` / ``parquet`` layouts) and of its index (tar shards)."""
    samples = _samples(source, unit, blobs)
    if settings.layout == "parquet":
        return parquet_bytes(samples, source.classes, settings.members, settings.compress, base.hash.hex()), None
    data, index = shard_layout(samples, settings.members, settings.compress)
    return data, index.to_bytes()


def _write_index(store: Store, unit: _Unit, index: bytes | None) -> None:
    """Write (or repair) the unit's random-access index, a pure function of its shard."""
    if index is not None and store.read(unit.index_name, limit=MAX_INDEX_BYTES) != index:
        store.write(unit.index_name, index)


def _shard_records(data: bytes, source: str, settings: ConvertSettings) -> list[bytes]:
    """The records of a shard, read back with every check of its layout."""
    if settings.layout == "parquet":
        return [s.ndf for s in read_parquet(data, source)]
    return [parts.get("ndf", b"") for _, parts in parse_shard(data, source)]


def measure_psnr(images: Sequence[np.ndarray], blobs: Sequence[bytes], base: SharedBase, device: str = "cpu") -> list[float]:
    """PSNR (dB, 2 decimals) of each record decoded at its image's size, against the image.

    The decoded pixels are rounded to 8 bits first (what a PNG of the decode would hold);
    identical pixels give 100 dB.
    """
    fields = read_fields(list(blobs), base, [f"<record {i}>" for i in range(len(blobs))])
    out = [0.0] * len(blobs)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(im.shape[:2], []).append(i)
    for size, idx in by_size.items():
        for c in range(0, len(idx), _MEASURE_BATCH):
            part = idx[c : c + _MEASURE_BATCH]
            x = render_fields([fields[i] for i in part], size, device).cpu()
            ref = torch.from_numpy(np.stack([images[i] for i in part])).permute(0, 3, 1, 2).float() / 255
            mse = ((torch.round(x * 255) / 255 - ref) ** 2).flatten(1).mean(1).clamp_min(1e-10)
            for i, v in zip(part, (-10 * torch.log10(mse)).tolist()):
                out[i] = round(min(float(v), 100.0), 2)
    return out


def _finished(store: Store, source: Source, unit: _Unit, base: SharedBase, settings: ConvertSettings) -> dict | None:
    """The unit's stats if its output is complete and valid (re-writing a missing stats file), else ``None``.

    A shard must read back completely and be exactly the shard this job would write for the
    records it holds; every record must decode with ``base``. In the ``files`` layout the
    stats file is the completion mark and every file it lists must be present and valid.
    The statistics of a kept unit are its stats file's when that agrees with the unit, else
    they are measured again.
    """
    labels = source.splits[unit.split].labels[unit.start : unit.stop]
    old = store.read(unit.stats_name, limit=1 << 28)
    try:
        previous = json.loads(old) if old is not None else None
    except ValueError:
        previous = None
    try:
        if settings.layout != "files":
            name = _shard_file(unit, settings)
            data = store.read(name, limit=_MAX_SHARD_BYTES)
            if data is None:
                return None
            blobs = _shard_records(data, store.path(name), settings)
            if len(blobs) != unit.stop - unit.start:
                return None
            expected, index = _shard_data(source, unit, blobs, base, settings)
            if expected != data:
                return None
            _write_index(store, unit, index)
            extra = {"shard": name, "shard_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        else:
            if previous is None:
                return None
            files = previous.get("files")
            if files != [_file_name(source, unit, i, label) for i, label in zip(range(unit.start, unit.stop), labels)]:
                return None
            blobs = [store.read(f) for f in files]
            if any(b is None for b in blobs):
                return None
            extra = {"files": files}
        read_fields(blobs, base, [f"{unit.name}/{i}" for i in range(len(blobs))])
    except (NDFError, ValueError, AttributeError):
        return None
    psnrs = previous.get("psnr") if isinstance(previous, dict) and previous.get("bytes") == [len(b) for b in blobs] else None
    if psnrs is None or len(psnrs) != len(blobs):
        if settings.layout == "files":
            return None
        psnrs = measure_psnr(source.splits[unit.split].images(unit.start, unit.stop), blobs, base)
    stats = _stats(unit, blobs, labels, psnrs, extra)
    if old != _json_bytes(stats, compact=True):
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

    def update(self, blobs: Sequence[bytes], psnrs: Sequence[float]) -> None:
        self.psnr_sum += float(sum(psnrs))
        self.bytes_sum += sum(len(b) for b in blobs)
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
) -> None:
    """Encode one unit and write its files, in the order that keeps a crash harmless (see :func:`_unit_files`)."""
    for name, data in _unit_files(source, unit, base, settings, device, bar):
        store.write(name, data)


def _unit_files(
    source: Source, unit: _Unit, base: SharedBase, settings: ConvertSettings, device: str, bar: _Progress | None = None
) -> list[tuple[str, bytes]]:
    """Encode one unit: the ``(name, bytes)`` of the files it is made of, in the order to write them.

    A pure function of the unit's images and the settings (every engine, local, torchrun or
    Ray, writes the same bytes). Tar and Parquet layouts: the statistics first (the manifest
    can always be rebuilt), the index, the shard last (its presence marks the unit done);
    the ``files`` layout: the records, then the statistics (the completion mark).
    """
    split: Split = source.splits[unit.split]
    labels = split.labels[unit.start : unit.stop]
    images = split.images(unit.start, unit.stop)
    blobs: list[bytes] = []
    psnrs: list[float] = []
    for c in range(0, len(images), settings.batch_size):
        with warnings.catch_warnings():  # missed targets are counted in the manifest ("below_target"), not warned per batch
            warnings.filterwarnings("ignore", message=r".* can not reach .* dB with this base")
            chunk = encode_batch(
                images[c : c + settings.batch_size],
                psnr=None if settings.mean_psnr else settings.psnr,
                mean_psnr=settings.psnr if settings.mean_psnr else None,
                min_psnr=settings.min_psnr,
                base=base,
                labels=labels[c : c + settings.batch_size],
                steps=settings.steps,
                seed=settings.seed,
                device=device,
                batch_size=settings.batch_size,
                early_stop=settings.early_stop,
            )
        measured = measure_psnr(images[c : c + settings.batch_size], chunk, base)
        blobs += chunk
        psnrs += measured
        if bar is not None:
            bar.update(chunk, measured)
    if settings.layout != "files":
        name = _shard_file(unit, settings)
        data, index = _shard_data(source, unit, blobs, base, settings)
        extra = {"shard": name, "shard_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        stats = _json_bytes(_stats(unit, blobs, labels, psnrs, extra), compact=True)
        return [(unit.stats_name, stats)] + ([(unit.index_name, index)] if index is not None else []) + [(name, data)]
    files = [_file_name(source, unit, i, label) for i, label in zip(range(unit.start, unit.stop), labels)]
    stats = _json_bytes(_stats(unit, blobs, labels, psnrs, {"files": files}), compact=True)
    return list(zip(files, blobs)) + [(unit.stats_name, stats)]
