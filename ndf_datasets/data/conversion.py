"""Convert an image dataset into NDF records: one shared base plus WebDataset or Parquet shards, or files.

``convert(SRC, OUT)`` (and ``ndf convert SRC OUT``) reads a source (see
:mod:`ndf_datasets.data.sources`: MNIST / CIFAR-10 raw copies, ImageFolder trees, file lists,
fsspec URLs), takes the zoo base of its kind (``base="auto"``, the default: :data:`AUTO_BASES`),
a given one, or fits one on its training split, then encodes every split as records of that
base. Output (``OUT`` is a folder or an ``s3://``-like URL)::

    OUT/
    ├── ndf_convert.json             the job: settings + source; written first, checked on resume
    ├── <hash>.ndfbase               the shared base
    ├── train-000000.tar.gz ...      WebDataset shards (the default): 000000.ndf 000001.ndf ... gzipped
    ├── stats/train-000000.json      per-shard keys, labels, PSNR and bytes of every image
    ├── stats/train-000000.ndfidx    where each record lies in the shard (random access: .access)
    ├── ndf_dataset.json             the manifest (layout, counts, footprint ...); written last
    └── README.md                    the dataset card (HF style; one a person edited is never rewritten)

The layouts (``layout=``, ``ndf convert --format``), each a standard its ecosystem reads:

* ``"webdataset"`` (default): tar shards with one ``<key>.ndf`` member per sample (the label
  is inside the record), gzip-compressed: ``<split>-NNNNNN.tar.gz``. ``members=("ndf", "cls",
  "json")`` adds ``.cls`` / ``.json`` members; ``compress=False`` writes plain ``.tar``.
* ``"parquet"``: ``<split>-NNNNNN.parquet`` with ``image`` (``NDFImage``), ``label``, ``key``
  columns and the features in the schema metadata (:mod:`.parquet`), for HF ``datasets``.
* ``"files"``: ``OUT/<split>/<class>/<key>.ndf`` (the layout
  :class:`~ndf_datasets.integrations.torchvision.NDFImageFolder` reads, with a copy of the
  base in each ``OUT/<split>/``).

**Resumable.** A shard's bytes depend only on its own images and the settings (each shard is
fitted by its own :func:`~ndf_datasets.encode_batch` calls with a fixed seed) and every file
is written atomically, so after a kill at any moment the same command finishes the job and
the result is byte-identical to an uninterrupted run. Finished shards are verified (read
back completely) and skipped; the base is reused; a different command on the same ``OUT``
is refused.

**torchrun.** Launched by ``torchrun --nproc_per_node N``, rank *r* converts the shards
whose index modulo N is *r*; rank 0 prepares ``OUT`` and fits the base while the others
wait, and writes the manifest once every rank has finished (a gloo process group).

The settings, the plan of units (shards) and the job file are :mod:`.job`; encoding and
verifying one unit is :mod:`.units`; the statistics files and the manifest are
:mod:`.manifest`. This module fits or reuses the base and runs the loop over the units.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import numpy as np
import torch

from ..codec import BASE_SUFFIX, NDFError, SharedBase, base_filename, fit_base, load_base
from ..codec import format as fmt
from ._dist import Group, env_world
from ._store import Store
from .card import write_card
from .job import (  # noqa: F401 (re-exported: the names ndf_datasets.convert had)
    JOB_FILE,
    LAYOUTS,
    MANIFEST,
    MEMBER_CHOICES,
    STATS_DIR,
    UNLABELLED,
    ConvertResult,
    ConvertSettings,
    _check_not_inside,
    _counts,
    _job,
    _json_bytes,
    _plan,
    _prepare_out,
)
from .manifest import _manifest
from .sources import Source, open_source
from .units import _encode_unit, _finished, _Progress

__all__ = ["convert", "ConvertResult", "ConvertSettings", "JOB_FILE", "MANIFEST", "STATS_DIR", "LAYOUTS"]


def _member_order(member: str) -> int:
    return MEMBER_CHOICES.index(member) if member in MEMBER_CHOICES else len(MEMBER_CHOICES)


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


#: The zoo base ``base="auto"`` picks for a source kind (RGB image files: the ``natural`` base).
AUTO_BASES = {
    "mnist": "mnist",
    "cifar10-bin": "cifar10",
    "cifar10-py": "cifar10",
    "imagefolder": "natural",
    "files": "natural",
}
#: The PSNR target ``psnr="auto"`` gives records of each zoo base: the operating points the
#: classifier experiments checked (EXPERIMENTS.md; ``natural``: a photographic default), and 30 dB
#: for a fitted version-1 base (``cifar10-wide`` takes ``cifar10``'s point).
AUTO_PSNR = {"mnist": 46.0, "cifar10": 40.0, "cifar10-wide": 40.0, "natural": 36.0, None: 30.0}


def _auto(source: Source, base: Any, psnr: Any, mode: str | None) -> tuple[Any, float | None]:
    """``(base, psnr)`` with ``"auto"`` resolved for ``source``: the zoo base of its kind when
    the images fit it (MNIST's 28x28 grey digits, CIFAR-10, RGB files), else ``None`` (fit one)."""
    if isinstance(base, str) and base == "auto":
        name = AUTO_BASES.get(source.kind)
        if name == "natural":
            first = next((sp for sp in source.splits.values() if len(sp)), None)
            channels = first.images(0, 1)[0].shape[-1] if first is not None else 0
            name = name if channels == 3 and mode in (None, "RGB") else None  # grey / RGBA files: fit a base
        base = name
    if isinstance(psnr, str):
        if psnr != "auto":
            raise ValueError(f"psnr must be a number, None or 'auto', got {psnr!r}")
        psnr = AUTO_PSNR.get(base if isinstance(base, str) and base in AUTO_PSNR else None, AUTO_PSNR[None])
    return base, psnr


def _make_settings(base: SharedBase | str | os.PathLike | None, **kw: Any) -> tuple[ConvertSettings, SharedBase | None]:
    """The checked settings of a conversion (``convert``'s arguments) and the given base, loaded."""
    given = load_base(os.fspath(base)) if isinstance(base, (str, os.PathLike)) else base
    splits = kw.pop("splits")
    settings = ConvertSettings(
        **{k: kw[k] for k in ("layout", "steps", "max_images", "mode", "base_arch", "base_max_images")},
        members=tuple(sorted({"ndf", *kw["members"]}, key=_member_order)), compress=bool(kw["compress"]),
        psnr=None if kw["psnr"] is None else float(kw["psnr"]), mean_psnr=bool(kw["mean_psnr"]),
        min_psnr=None if kw["min_psnr"] is None else float(kw["min_psnr"]), seed=int(kw["seed"]),
        device=str(kw["device"]), batch_size=int(kw["batch_size"]), shard_size=int(kw["shard_size"]),
        splits=tuple(splits) if splits is not None else None, early_stop=bool(kw["early_stop"]),
        base=given.hash.hex() if given is not None else None, base_epochs=int(kw["base_epochs"]),
        base_batch_size=int(kw["base_batch_size"]), base_lmbda=float(kw["base_lmbda"]),
    )  # fmt: skip
    settings.check()
    if settings.mean_psnr and not (given is not None and getattr(given.arch, "learned", False)):
        raise ValueError("mean_psnr needs a learned base (a zoo base such as 'cifar10', or a trained .ndfbase)")
    return settings, given


def _open(src: Any, out: Any, storage_options: dict | None, kind: str | None, settings: ConvertSettings) -> tuple:
    """``(source, store, units, counts)`` of a conversion (every rank / engine computes the same)."""
    source = src if isinstance(src, Source) else open_source(src, storage_options, kind=kind, mode=settings.mode)
    return source, Store(out, storage_options), _plan(source, settings), _counts(source, settings)


def _setup(
    source: Source, store: Store, settings: ConvertSettings, counts: dict, given: SharedBase | None, device: str,
    progress: bool, force: bool,
) -> SharedBase:  # fmt: skip
    """Prepare ``OUT`` (job file, resume checks) and its base; one process does this."""
    _check_not_inside(source, store)
    _prepare_out(store, _job(source, settings), list(counts), force)
    return _prepare_base(store, source, settings, list(counts), given, device, progress)


def _finish(
    store: Store, source: Source, settings: ConvertSettings, units: Sequence[Any], base: SharedBase, name: str,
    counts: dict,
) -> dict[str, Any]:  # fmt: skip
    """Write the manifest (every unit must be done) and the dataset card; one process does this."""
    manifest = _manifest(store, source, settings, units, base, name, counts)
    store.remove_temps()
    store.write(MANIFEST, _json_bytes(manifest))
    write_card(store, manifest)
    return manifest


# ----------------------------------------------------------------------------- the entry point


def convert(
    src: str | os.PathLike | Sequence[str | os.PathLike] | Source,
    out: str | os.PathLike,
    *,
    layout: str = "webdataset",
    members: Sequence[str] = ("ndf",),
    compress: bool = True,
    psnr: float | str | None = "auto",
    mean_psnr: bool = False,
    min_psnr: float | None = None,
    steps: int | None = 20,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 256,
    shard_size: int = 10000,
    max_images: int | None = None,
    splits: Sequence[str] | None = None,
    mode: str | None = None,
    early_stop: bool = True,
    base: SharedBase | str | os.PathLike | None = "auto",
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
            of image files, or an opened :class:`~ndf_datasets.data.sources.Source`.
        out: output folder or URL (``s3://bucket/prefix``).
        layout: ``"webdataset"`` (tar shards), ``"parquet"`` (Parquet shards) or ``"files"``
            (``OUT/<split>/<class>/<key>.ndf``); see the module docstring.
        members: what a sample holds: its record (``"ndf"``, always) and, when listed, ``"cls"``
            and/or ``"json"`` (WebDataset members; a ``json`` column in Parquet). Default:
            the record alone (compact; the label is inside the record).
        compress: gzip tar shards (``.tar.gz``) / zstd Parquet pages (``False``: uncompressed).
        psnr, steps, seed, device, early_stop: record fitting (see :func:`~ndf_datasets.encode_batch`);
            ``psnr="auto"`` (default): the zoo base's checked operating point (:data:`AUTO_PSNR`:
            ``cifar10`` 40 dB, ``mnist`` 46 dB, ``natural`` 36 dB), 30 dB for a fitted base.
        mean_psnr: learned bases: ``psnr`` is the mean PSNR of each ``batch_size`` batch (so of
            each split), reached at the fewest bytes, instead of every image's floor (CIFAR-10,
            zoo base: 6-8% smaller records at the same mean; single images fall below it).
        min_psnr: with ``mean_psnr``: no image below this PSNR (a floor; it costs bytes).
        batch_size: images per ``encode_batch`` call.
        shard_size: images per shard.
        max_images: keep only the first ``max_images`` images of each split.
        splits: convert only these splits.
        mode: Pillow mode for image files (``"L"``, ``"RGB"``, ``"RGBA"``).
        base: ``"auto"`` (default): the zoo base for the source's kind (:data:`AUTO_BASES`:
            MNIST -> ``mnist``, CIFAR-10 -> ``cifar10``, RGB image files -> ``natural``; other
            images get a fitted base); ``None``: fit a version-1 base on the training split;
            or a base (object, ``.ndfbase`` path or zoo name) to use.
        base_arch, base_epochs, base_batch_size, base_max_images, base_lmbda: shared-base
            fitting on the training split (its first ``base_max_images`` images); ``base_lmbda``
            is the rate weight (larger: smaller records, lower PSNR).
        kind: force the source kind (see :func:`~ndf_datasets.data.sources.open_source`).
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
        FileNotFoundError, ~ndf_datasets.data.sources.SourceError: a missing or malformed source.
        RuntimeError: another rank failed.

    Returns:
        A :class:`ConvertResult`.
    """
    t0 = time.time()
    if (isinstance(base, str) and base == "auto") or isinstance(psnr, str):
        src = src if isinstance(src, Source) else open_source(src, storage_options, kind=kind, mode=mode)
        base, psnr = _auto(src, base, psnr, mode)
    settings, given = _make_settings(
        base, layout=layout, members=members, compress=compress, psnr=psnr, mean_psnr=mean_psnr, min_psnr=min_psnr,
        steps=steps, seed=seed, device=device, batch_size=batch_size, shard_size=shard_size, max_images=max_images, splits=splits, mode=mode,
        early_stop=early_stop, base_arch=base_arch, base_epochs=base_epochs, base_batch_size=base_batch_size,
        base_max_images=base_max_images, base_lmbda=base_lmbda,
    )  # fmt: skip
    rank, world, local = env_world() if distributed is not False else (0, 1, 0)
    run_device = f"cuda:{local}" if settings.device == "cuda" and world > 1 else settings.device
    group = Group(rank, world, dist_timeout)
    try:
        error: BaseException | None = None
        source = store = units = counts = None
        base_hash = b"\0" * fmt.BASE_HASH_BYTES
        try:
            source, store, units, counts = _open(src, out, storage_options, kind, settings)
            if rank == 0:
                base_hash = _setup(source, store, settings, counts, given, run_device, progress, force).hash
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
                manifest = _finish(store, source, settings, units, the_base, name or source.name, counts)
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
