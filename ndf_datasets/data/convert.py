"""Convert an image dataset into NDF records: one shared base plus WebDataset shards or files.

``convert(SRC, OUT)`` (and ``ndf convert SRC OUT``) reads a source (see
:mod:`ndf_datasets.sources`: MNIST / CIFAR-10 raw copies, ImageFolder trees, file lists,
fsspec URLs), fits a shared base on its training split (or takes a given one), then encodes
every split as records of that base. Output (``OUT`` is a folder or an ``s3://``-like URL)::

    OUT/
    ├── ndf_convert.json             the job: settings + source; written first, checked on resume
    ├── <hash>.ndfbase               the shared base
    ├── train-000000.tar ...         WebDataset shards: 000000.ndf 000000.cls 000000.json ...
    ├── stats/train-000000.json      per-shard keys, labels, PSNR and bytes of every image
    └── ndf_dataset.json             the manifest; written last

With ``layout="files"`` the records are ``OUT/<split>/<class>/<key>.ndf`` (the layout
:class:`~ndf_datasets.integrations.torchvision.NDFImageFolder` reads, with a copy of the
base in each ``OUT/<split>/``) instead of shards.

**Resumable.** A shard's bytes depend only on its own images and the settings (each shard is
fitted by its own :func:`~ndf_datasets.encode_batch` calls with a fixed seed) and every file
is written atomically, so after a kill at any moment the same command finishes the job and
the result is byte-identical to an uninterrupted run. Finished shards are verified (read
back completely) and skipped; the base is reused; a different command on the same ``OUT``
is refused.

**torchrun.** Launched by ``torchrun --nproc_per_node N``, rank *r* converts the shards
whose index modulo N is *r*; rank 0 prepares ``OUT`` and fits the base while the others
wait, and writes the manifest once every rank has finished (a gloo process group).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .. import _version
from ..codec import BASE_SUFFIX, NDFError, SharedBase, base_filename, encode_batch, fit_base, is_url, load_base
from ..codec import format as fmt
from ._dist import Group, env_world
from ._store import Store
from .shards import Sample, parse_shard, shard_bytes
from .sources import Source, Split, open_source

__all__ = ["convert", "ConvertResult", "ConvertSettings", "JOB_FILE", "MANIFEST", "STATS_DIR", "LAYOUTS"]

#: the job file: written first, compared on resume
JOB_FILE = "ndf_convert.json"
#: the manifest (the name ``integrations/hf_builder.py`` reads); written last
MANIFEST = "ndf_dataset.json"
#: folder of the per-shard statistics files
STATS_DIR = "stats"
#: output layouts: WebDataset shards, or one ``.ndf`` file per image in class folders
LAYOUTS = ("webdataset", "files")
#: class folder of unlabelled images in the ``files`` layout
UNLABELLED = "unlabeled"

_SHARD = re.compile(r"[A-Za-z0-9_]+-\d+\.tar")
_MAX_SHARD_BYTES = 1 << 32


@dataclass(frozen=True)
class ConvertSettings:
    """Everything that changes the output bytes (recorded in the job file and the manifest).

    Attributes:
        layout: ``"webdataset"`` or ``"files"``.
        psnr: target PSNR of the records in dB.
        steps: maximum fitting steps per record (``None``: the codec's default).
        seed: fitting seed (the same for every shard).
        device: fitting device (CPU and GPU results differ, so it is part of the job).
        batch_size: images per :func:`~ndf_datasets.encode_batch` call.
        shard_size: images per shard (per stats file in the ``files`` layout).
        max_images: convert only the first ``max_images`` images of each split.
        splits: the splits to convert (``None``: all).
        mode: Pillow mode image files are converted to (``None``: the first image's).
        early_stop: see :class:`~ndf_datasets.fitting.FitSettings`.
        base: the given base's hash, or ``None`` to fit one with the ``base_*`` settings.
        base_arch, base_epochs, base_batch_size, base_max_images, base_lmbda: shared-base
            fitting (``base_lmbda`` is the rate weight: larger, smaller records).

    The defaults are the measured operating point the loaders are tuned for (BENCHMARKS.md,
    EXPERIMENTS.md): a ``conv-field`` base (amortised encoder), 12 epochs at lambda 4e-4,
    then 20 refinement steps per record (~100 images/s on 2 CPU cores).
    """

    layout: str = "webdataset"
    psnr: float | None = 30.0
    steps: int | None = 20
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 256
    shard_size: int = 10000
    max_images: int | None = None
    splits: tuple[str, ...] | None = None
    mode: str | None = None
    early_stop: bool = True
    base: str | None = None
    base_arch: str = "conv-field"
    base_epochs: int = 12
    base_batch_size: int = 128
    base_max_images: int | None = None
    base_lmbda: float = 4e-4

    def check(self) -> None:
        """Raise ``ValueError`` for an invalid setting."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("batch_size", "shard_size", "base_epochs", "base_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < float(self.base_lmbda) < 1:
            raise ValueError(f"base_lmbda must be in (0, 1), got {self.base_lmbda}")
        for name in ("max_images", "base_max_images", "steps"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1 (or None), got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["splits"] = list(self.splits) if self.splits is not None else None
        return d


@dataclass
class ConvertResult:
    """What :func:`convert` did (in this process).

    Attributes:
        out: the output location.
        base_hash: hex hash of the shared base.
        counts: images per split in the output.
        encoded: images this process encoded in this run (skipped shards excluded).
        skipped: shards (units) this process found finished and kept.
        seconds: wall time of this call.
        images_per_s: ``encoded`` / time spent encoding.
        manifest: the manifest (rank 0 only; ``None`` on other ranks).
    """

    out: str
    base_hash: str
    counts: dict[str, int]
    encoded: int = 0
    skipped: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0
    manifest: dict[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Unit:
    """A shard: images ``start..stop-1`` of ``split``; ``ordinal`` picks the rank."""

    split: str
    index: int
    start: int
    stop: int
    ordinal: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"

    @property
    def stats_name(self) -> str:
        return f"{STATS_DIR}/{self.name}.json"


def _json_bytes(obj: Any, compact: bool = False) -> bytes:
    text = (
        json.dumps(obj, sort_keys=True, separators=(",", ":")) if compact else json.dumps(obj, indent=1, sort_keys=True)
    )
    return (text + "\n").encode("utf-8")


def _versions() -> dict[str, str]:
    return {
        "ndf_datasets": _version.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- planning


def _split_names(source: Source, settings: ConvertSettings) -> list[str]:
    if settings.splits is None:
        return list(source.splits)
    missing = [s for s in settings.splits if s not in source.splits]
    if missing:
        raise ValueError(f"the source has no split {missing[0]!r}; it has {list(source.splits)}")
    return [s for s in source.splits if s in settings.splits]


def _plan(source: Source, settings: ConvertSettings) -> list[_Unit]:
    units: list[_Unit] = []
    for split in _split_names(source, settings):
        n = len(source.splits[split])
        n = min(n, settings.max_images) if settings.max_images is not None else n
        for index, start in enumerate(range(0, n, settings.shard_size)):
            units.append(_Unit(split, index, start, min(start + settings.shard_size, n), len(units)))
    return units


def _counts(source: Source, settings: ConvertSettings) -> dict[str, int]:
    cap = settings.max_images
    return {
        s: min(len(source.splits[s]), cap) if cap else len(source.splits[s]) for s in _split_names(source, settings)
    }


def _job(source: Source, settings: ConvertSettings) -> dict[str, Any]:
    return {
        "format": "ndf-convert-job",
        "version": 1,
        "settings": settings.to_json(),
        "source": source.describe(),
        "versions": _versions(),
    }


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


# ----------------------------------------------------------------------------- preparing OUT (rank 0)


def _ours(name: str, splits: Sequence[str]) -> bool:
    """Whether ``name`` (relative to OUT) is a file a conversion writes."""
    top = name.split("/", 1)[0]
    if name in (JOB_FILE, MANIFEST) or top == STATS_DIR or _SHARD.fullmatch(name):
        return True
    if "/" not in name and name.endswith(BASE_SUFFIX):
        return True
    return top in splits and name.endswith((".ndf", BASE_SUFFIX))


def _check_not_inside(source: Source, store: Store) -> None:
    if store.remote or is_url(source.location) or source.kind == "files":
        return
    a, b = os.path.realpath(source.location), os.path.realpath(store.location)
    if os.path.commonpath([a, b]) in (a, b):
        raise ValueError(f"the output {b} and the source {a} overlap; write the conversion somewhere else")


def _prepare_out(store: Store, job: dict, splits: Sequence[str], force: bool) -> None:
    """Check OUT is empty, or holds this very job (resume); with ``force`` clear a previous conversion."""
    names = store.names()
    raw = store.read(JOB_FILE, limit=1 << 20)
    previous = None
    if raw is not None:
        try:
            previous = json.loads(raw)
        except ValueError:
            previous = {}
    if force:
        old_splits = list((previous or {}).get("source", {}).get("counts", {})) if isinstance(previous, dict) else []
        for name in names:
            if _ours(name, list(splits) + old_splits):
                store.remove(name)
    elif previous is not None and previous != job:
        changes = "; ".join(_diff(previous, job)[:6]) or "unreadable job file"
        raise ValueError(
            f"{store.path(JOB_FILE)}: OUT holds a conversion made by a different command ({changes}); "
            "use another OUT, or pass --force (force=True) to start it over"
        )
    elif previous is None and names:
        raise FileExistsError(
            f"{store.location} exists and holds files that are not an NDF conversion (e.g. {names[0]!r}); "
            "refusing to write there without --force (force=True)"
        )
    store.remove_temps()
    if store.read(JOB_FILE, limit=1 << 20) != _json_bytes(job):
        store.write(JOB_FILE, _json_bytes(job))


def _train_split(source: Source, splits: Sequence[str]) -> str:
    return "train" if "train" in splits else splits[0]


def _fit_base(
    source: Source, settings: ConvertSettings, splits: Sequence[str], device: str, progress: bool
) -> SharedBase:
    name = _train_split(source, splits)
    split = source.splits[name]
    n = len(split)
    for cap in (settings.max_images, settings.base_max_images):
        n = min(n, cap) if cap is not None else n
    if n == 0:
        raise ValueError(f"split {name!r} is empty; there is nothing to fit a base on (pass --base)")
    images = split.images(0, n)
    shape = images[0].shape
    images = [im for im in images if im.shape == shape]
    stack = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return fit_base(
        stack,
        arch=settings.base_arch,
        epochs=settings.base_epochs,
        batch_size=settings.base_batch_size,
        lmbda=settings.base_lmbda,
        seed=settings.seed,
        device=device,
        progress=progress,
    )


def _prepare_base(
    store: Store,
    source: Source,
    settings: ConvertSettings,
    splits: Sequence[str],
    given: SharedBase | None,
    device: str,
    progress: bool,
) -> SharedBase:
    """The given base, the base a previous run of this job saved, or a newly fitted one; saved in OUT."""
    if given is not None:
        base = given
    else:
        found = [n for n in store.names() if "/" not in n and n.endswith(BASE_SUFFIX)]
        if len(found) > 1:
            raise ValueError(f"{store.location} holds several bases {found}; pass --force to start over")
        base = None
        if found:
            try:
                base = load_base(store.read(found[0]), source=store.path(found[0]))
            except NDFError:
                store.remove(found[0])
        if base is None:
            base = _fit_base(source, settings, splits, device, progress)
    data = base.to_bytes()
    targets = [base_filename(base.hash)]
    if settings.layout == "files":
        targets += [f"{s}/{base_filename(base.hash)}" for s in splits]
    for name in targets:
        if store.read(name) != data:
            store.write(name, data)
    return base


# ----------------------------------------------------------------------------- one shard


def _class_name(source: Source, label: int | None) -> str:
    if label is None:
        return UNLABELLED
    return source.classes[label] if label < len(source.classes) else str(label)


def _file_name(source: Source, unit: _Unit, i: int, label: int | None) -> str:
    return f"{unit.split}/{_class_name(source, label)}/{i:06d}.ndf"


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


# ----------------------------------------------------------------------------- the manifest (rank 0)


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


# ----------------------------------------------------------------------------- the entry point


def convert(
    src: str | os.PathLike | Sequence[str | os.PathLike] | Source,
    out: str | os.PathLike,
    *,
    layout: str = "webdataset",
    psnr: float | None = 30.0,
    steps: int | None = 20,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 256,
    shard_size: int = 10000,
    max_images: int | None = None,
    splits: Sequence[str] | None = None,
    mode: str | None = None,
    early_stop: bool = True,
    base: SharedBase | str | os.PathLike | None = None,
    base_arch: str = "conv-field",
    base_epochs: int = 12,
    base_batch_size: int = 128,
    base_max_images: int | None = None,
    base_lmbda: float = 4e-4,
    kind: str | None = None,
    name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    distributed: bool | None = None,
    dist_timeout: float = 10800.0,
) -> ConvertResult:
    """Convert an image dataset to NDF records of one shared base (resumable, torchrun-aware).

    Example::

        ndf.convert("raw/mnist", "out/mnist", psnr=30, shard_size=10000)
        ds = datasets.load_dataset("out/mnist", split="train")

    Args:
        src: a raw MNIST / CIFAR-10 copy, an ImageFolder root (local or fsspec URL), a list
            of image files, or an opened :class:`~ndf_datasets.sources.Source`.
        out: output folder or URL (``s3://bucket/prefix``).
        layout: ``"webdataset"`` (tar shards) or ``"files"`` (``OUT/<split>/<class>/<key>.ndf``).
        psnr, steps, seed, device, early_stop: record fitting (see :func:`~ndf_datasets.encode_batch`).
        batch_size: images per ``encode_batch`` call.
        shard_size: images per shard.
        max_images: keep only the first ``max_images`` images of each split.
        splits: convert only these splits.
        mode: Pillow mode for image files (``"L"``, ``"RGB"``, ``"RGBA"``).
        base: an existing base (object or ``.ndfbase`` path) to use instead of fitting one.
        base_arch, base_epochs, base_batch_size, base_max_images, base_lmbda: shared-base
            fitting on the training split (its first ``base_max_images`` images); ``base_lmbda``
            is the rate weight (larger: smaller records, lower PSNR).
        kind: force the source kind (see :func:`~ndf_datasets.sources.open_source`).
        name: dataset name in the manifest (default: from the source).
        storage_options: fsspec options for URLs (source and output); never recorded.
        force: write into an ``OUT`` that holds something else, deleting a previous
            conversion's files there (other files are left alone) and starting over.
        progress: show progress bars (base fitting; images/s, mean PSNR and ETA while encoding).
        distributed: ``None``: follow the torchrun environment (``WORLD_SIZE`` > 1);
            ``False``: a single process whatever the environment.
        dist_timeout: seconds a rank may wait for the others (rank 0 fitting the base).

    Raises:
        FileExistsError: ``OUT`` holds files that are not a conversion (without ``force``).
        ValueError: ``OUT`` holds a conversion made with other settings, or bad settings.
        FileNotFoundError, ~ndf_datasets.sources.SourceError: a missing or malformed source.
        RuntimeError: another rank failed.

    Returns:
        A :class:`ConvertResult`.
    """
    t0 = time.time()
    given = load_base(os.fspath(base)) if isinstance(base, (str, os.PathLike)) else base
    settings = ConvertSettings(
        layout, None if psnr is None else float(psnr), steps, int(seed), str(device), int(batch_size), int(shard_size),
        max_images, tuple(splits) if splits is not None else None, mode, bool(early_stop),
        given.hash.hex() if given is not None else None, base_arch, int(base_epochs), int(base_batch_size), base_max_images,
        float(base_lmbda),
    )  # fmt: skip
    settings.check()
    rank, world, local = env_world() if distributed is not False else (0, 1, 0)
    run_device = f"cuda:{local}" if settings.device == "cuda" and world > 1 else settings.device
    group = Group(rank, world, dist_timeout)
    try:
        error: BaseException | None = None
        source = store = units = counts = None
        base_hash = b"\0" * fmt.BASE_HASH_BYTES
        try:
            source = src if isinstance(src, Source) else open_source(src, storage_options, kind=kind, mode=mode)
            store = Store(out, storage_options)
            units = _plan(source, settings)
            counts = _counts(source, settings)
            if rank == 0:
                _check_not_inside(source, store)
                _prepare_out(store, _job(source, settings), list(counts), force)
                fitted = _prepare_base(store, source, settings, list(counts), given, run_device, progress)
                base_hash = fitted.hash
        except Exception as exc:  # noqa: BLE001 - reported to every rank, then re-raised
            error = exc
        if not group.all_ok(error is None):
            raise error or RuntimeError("another rank failed while preparing the conversion (see its error)")
        base_hash = group.broadcast_bytes(base_hash, fmt.BASE_HASH_BYTES)
        the_base = load_base(store.read(base_filename(base_hash)), source=store.path(base_filename(base_hash)))
        if the_base.hash != base_hash:
            raise NDFError("the base in OUT changed during the conversion", source=store.path(base_filename(base_hash)))

        mine = [u for u in units if u.ordinal % world == rank]
        encoded = skipped = 0
        t_enc = 0.0
        try:
            todo = []
            for unit in mine:
                if _finished(store, source, unit, the_base, settings) is not None:
                    skipped += 1
                else:
                    todo.append(unit)
            total = sum(u.stop - u.start for u in mine)
            bar = _Progress(total, total - sum(u.stop - u.start for u in todo), progress, rank, world)
            t1 = time.time()
            try:
                for unit in todo:
                    _encode_unit(store, source, unit, the_base, settings, run_device, bar)
                    encoded += unit.stop - unit.start
            finally:
                bar.close()
            t_enc = time.time() - t1
        except Exception as exc:  # noqa: BLE001
            error = exc
        if not group.all_ok(error is None):
            raise error or RuntimeError("another rank failed while encoding (see its error)")

        manifest = None
        try:
            if rank == 0:
                manifest = _manifest(store, source, settings, units, the_base, name or source.name, counts)
                store.remove_temps()
                store.write(MANIFEST, _json_bytes(manifest))
        except Exception as exc:  # noqa: BLE001
            error = exc
        if not group.all_ok(error is None):
            raise error or RuntimeError("rank 0 failed to write the manifest (see its error)")
    finally:
        group.close()
    return ConvertResult(
        out=store.location,
        base_hash=base_hash.hex(),
        counts=dict(counts),
        encoded=encoded,
        skipped=skipped,
        seconds=time.time() - t0,
        images_per_s=encoded / t_enc if t_enc > 0 else 0.0,
        manifest=manifest,
    )
