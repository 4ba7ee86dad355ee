"""A conversion's job: its settings, its plan of units (shards), the job file, and preparing ``OUT``.

:class:`ConvertSettings` holds everything that changes the output bytes; it is written to
``OUT/ndf_convert.json`` first and compared on resume, so a different command on the same
``OUT`` is refused. See :mod:`ndf_datasets.data.conversion` for the whole conversion.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .. import _version
from ..codec import BASE_SUFFIX, is_url
from ._store import Store
from .card import CARD, is_generated
from .shardindex import INDEX_SUFFIX
from .sources import Source

__all__ = ["ConvertResult", "ConvertSettings", "JOB_FILE", "MANIFEST", "STATS_DIR", "LAYOUTS", "MEMBER_CHOICES", "UNLABELLED"]

#: the job file: written first, compared on resume
JOB_FILE = "ndf_convert.json"
#: the manifest (the name ``integrations/hf/builder.py`` reads); written last
MANIFEST = "ndf_dataset.json"
#: folder of the per-shard statistics files
STATS_DIR = "stats"
#: output layouts: WebDataset shards, Parquet shards (HF ``datasets``), or one ``.ndf`` file per image in class folders
LAYOUTS = ("webdataset", "parquet", "files")
#: per-sample members / columns beyond the record that a layout can be asked for (``.cls``, ``.json``)
MEMBER_CHOICES = ("ndf", "cls", "json")
#: the file suffix of a shard, by layout and compression
SHARD_SUFFIX = {("webdataset", True): ".tar.gz", ("webdataset", False): ".tar", ("parquet", True): ".parquet",
                ("parquet", False): ".parquet"}  # fmt: skip
#: class folder of unlabelled images in the ``files`` layout
UNLABELLED = "unlabeled"

_SHARD = re.compile(r"[A-Za-z0-9_]+-\d+\.(?:tar|tar\.gz|parquet)")
_MAX_SHARD_BYTES = 1 << 32


@dataclass(frozen=True)
class ConvertSettings:
    """Everything that changes the output bytes (recorded in the job file and the manifest).

    Attributes:
        layout: ``"webdataset"`` (tar shards), ``"parquet"`` (Parquet shards) or ``"files"``.
        members: what each sample holds besides the record: ``("ndf",)`` (the compact
            default: the label is inside the record) or with ``"cls"`` / ``"json"`` (WebDataset
            members ``<key>.cls`` / ``<key>.json``; a ``json`` column in Parquet, whose
            ``label`` and ``key`` columns are always there).
        compress: gzip the tar shards (``.tar.gz``); zstd pages in Parquet.
        psnr: target PSNR of the records in dB.
        mean_psnr: ``psnr`` is the mean of each encode batch (learned bases), met at the fewest
            bytes (single images may fall below; see ``encode_batch(mean_psnr=)``), instead of
            every image's floor.
        min_psnr: with ``mean_psnr``: no image below this PSNR (a floor under the mean).
        steps: maximum fitting steps per record (``None``: the codec's default).
        seed: fitting seed (the same for every shard).
        device: fitting device (CPU and GPU results differ, so it is part of the job).
        batch_size: images per :func:`~ndf_datasets.encode_batch` call.
        shard_size: images per shard (per stats file in the ``files`` layout).
        max_images: convert only the first ``max_images`` images of each split.
        splits: the splits to convert (``None``: all).
        mode: Pillow mode image files are converted to (``None``: the first image's).
        early_stop: see :class:`~ndf_datasets.codec.fitting.FitSettings`.
        base: the given base's hash, or ``None`` to fit one with the ``base_*`` settings.
        base_arch, base_epochs, base_batch_size, base_max_images, base_lmbda: shared-base
            fitting (``base_lmbda`` is the rate weight: larger, smaller records).

    The defaults are the measured operating point the loaders are tuned for (BENCHMARKS.md,
    EXPERIMENTS.md): a ``conv-field`` base (amortised encoder), 12 epochs at lambda 4e-4,
    then 20 refinement steps per record (~100 images/s on 2 CPU cores).
    """

    layout: str = "webdataset"
    members: tuple[str, ...] = ("ndf",)
    compress: bool = True
    psnr: float | None = 30.0
    mean_psnr: bool = False
    min_psnr: float | None = None
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
            raise ValueError(f"layout (--format) must be one of {LAYOUTS}, got {self.layout!r}")
        if "ndf" not in self.members or any(m not in MEMBER_CHOICES for m in self.members):
            raise ValueError(f"members must include 'ndf' and be among {MEMBER_CHOICES}, got {self.members}")
        for name in ("batch_size", "shard_size", "base_epochs", "base_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mean_psnr and self.psnr is None:
            raise ValueError("mean_psnr needs a psnr target")
        if self.min_psnr is not None and not self.mean_psnr:
            raise ValueError("min_psnr is a floor under mean_psnr; without it psnr is already every image's floor")
        if not 0 < float(self.base_lmbda) < 1:
            raise ValueError(f"base_lmbda must be in (0, 1), got {self.base_lmbda}")
        for name in ("max_images", "base_max_images", "steps"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1 (or None), got {getattr(self, name)}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["splits"] = list(self.splits) if self.splits is not None else None
        d["members"] = list(self.members)
        return d

    @property
    def shard_suffix(self) -> str:
        """The file suffix of this layout's shards (``""`` for the ``files`` layout)."""
        return SHARD_SUFFIX.get((self.layout, bool(self.compress)), "")


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

    @property
    def index_name(self) -> str:
        """The shard's random-access index (:mod:`.shardindex`; tar layouts)."""
        return f"{STATS_DIR}/{self.name}{INDEX_SUFFIX}"


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
    if CARD in names and is_generated(store.read(CARD, limit=1 << 24)):
        names.remove(CARD)  # a card a conversion wrote and nobody edited: part of the conversion
        if force:
            store.remove(CARD)
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
