"""The ``datasets`` builder behind ``load_dataset("ndf_cifar10" | "ndf_mnist" | "ndf" | <shards>)``.

Names are resolved by :mod:`ndf_datasets.integrations.hf` (this module's package, so importing
this module registers them too). One builder class, :class:`NDFDatasetBuilder`, with one config
per source:

``shards`` (``load_dataset("ndf", data_dir=LOCATION)`` or ``load_dataset(LOCATION)``)
    reads every layout ``ndf convert`` writes, from a folder or fsspec URL (``s3://...``)::

        LOCATION/
        ├── 1f3a...9c.ndfbase            shared base, named by its hash
        ├── ndf_dataset.json             manifest (layout, class names, counts, shard SHA-256s)
        ├── train-000000.tar.gz          WebDataset: 000000.ndf 000001.ndf ... (+ .cls/.json if asked)
        ├── train-000000.parquet         or Parquet: image, label, key columns
        └── train/<class>/000000.ndf     or one file per image (the layout NDFImageFolder reads)

    (:mod:`.rows` turns each into rows; the ``files`` layout needs the manifest, as HF's
    ``imagefolder`` needs class folders.)

``cifar10`` / ``mnist`` (``load_dataset("ndf_cifar10")``, ``load_dataset("ndf_mnist")``)
    read the same layout from the NDF cache: ``location=`` if given, else
    ``$NDF_CIFAR10_URL`` / ``$NDF_MNIST_URL`` (a folder or URL), else
    ``$NDF_DATASETS_HOME/ndf_cifar10`` (default home ``~/.cache/ndf_datasets``). When the cache
    is empty and ``data_dir=`` names a raw copy, the cache is built first: a shared base is
    fitted on the train split, then every split is encoded as records of that base::

        load_dataset("ndf_cifar10", data_dir="raw")   # raw/cifar-10-batches-bin/data_batch_1.bin ...
        load_dataset("ndf_mnist", data_dir="raw")     # raw/train-images-idx3-ubyte.gz ...

    Build options are config kwargs: ``max_images`` (per split), ``base_epochs``, ``steps``,
    ``psnr``, ``mean_psnr``, ``min_psnr``, ``seed``, ``device``, ``shard_size``, ``progress``.
    Non-default values build into ``ndf_cifar10-<hash of the options>`` so a capped test
    build never shadows the full one.

Every split yields rows ``{"image": NDFImage, "label": ClassLabel | int, "key": str, "json": str}``.

``base=`` (config kwarg) makes a named build use a trained base instead of fitting one: a
``.ndfbase`` path or a zoo name (``"cifar10"``, ``"mnist"``); ``None`` (default) fits a base on
the train split. With a learned base, ``mean_psnr=True`` meets ``psnr`` as each encode batch's
mean at the fewest bytes (``ndf convert --mean-psnr``).

In streaming mode ``datasets`` patches ``open``, ``os.path``, ``glob``, ``gzip.open`` and
``pathlib.Path`` in this module; it therefore reads and lists only through fsspec and
:func:`ndf_datasets.open_url` / :func:`ndf_datasets.read_url`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import datasets
from datasets.builder import Key

from ...codec import BASE_SUFFIX, NDFBaseError, SharedBase, is_url, load_base_cached, read_url
from ...data import MANIFEST, convert, shards, sources
from . import rows
from .feature import NDFImage, _storage_options
from .raw import RAW_SOURCES, RawSource, read_cifar10, read_mnist, read_raw  # noqa: F401 (names of hf_builder.py)

__all__ = ["MANIFEST", "RAW_SOURCES", "NDFConfig", "NDFDatasetBuilder", "RawSource", "build_cache", "read_raw"]

# MANIFEST: the optional manifest next to the shards (written by :func:`ndf_datasets.convert`).
_SHARD = re.compile(r"(?P<split>[A-Za-z0-9_]+)-(?P<index>\d+)\.(?:tar|tar\.gz|parquet)$")


def _join(location: str, name: str) -> str:
    return location.rstrip("/") + "/" + name



# ----------------------------------------------------------------------------- config


@dataclass
class NDFConfig(datasets.BuilderConfig):
    """Config of :class:`NDFDatasetBuilder`.

    Attributes:
        source: key of :data:`RAW_SOURCES` (``"cifar10"``, ``"mnist"``), or ``None`` to read
            shards from ``data_dir`` / ``data_files``.
        location: where the shards of a named dataset live (overrides the env variables).
        max_images: build only the first ``max_images`` images of each split.
        base_epochs: epochs of shared-base fitting.
        steps: maximum fitting steps per record (``None``: the codec's default).
        psnr: target PSNR of the records in dB (each record's, or with ``mean_psnr`` the mean).
        mean_psnr: with a learned ``base``: ``psnr`` is the mean PSNR of each encode batch, met
            at the fewest bytes (single images may fall below it), as ``ndf convert --mean-psnr``.
        min_psnr: with ``mean_psnr``: no image below this PSNR (a floor under the mean).
        seed: fitting seed.
        device: fitting device.
        shard_size: samples per tar shard.
        progress: show fitting progress bars.
        base: a trained base to build with instead of fitting one (a ``.ndfbase`` path or a
            codec zoo name); ``None`` fits one on the train split.
    """

    source: str | None = None
    location: str | None = None
    max_images: int | None = None
    base_epochs: int = 20
    steps: int | None = None
    psnr: float | None = 30.0
    mean_psnr: bool = False
    min_psnr: float | None = None
    seed: int = 0
    device: str = "cpu"
    shard_size: int = 10000
    progress: bool = True
    base: str | None = None

    def build_options(self) -> dict[str, Any]:
        """The options that change a built cache's content."""
        options = {k: getattr(self, k) for k in ("max_images", "base_epochs", "steps", "psnr", "seed")}
        if self.base is not None:
            options["base"] = os.fspath(self.base)
        if self.mean_psnr:  # only when set: caches built before these options keep their names
            options["mean_psnr"] = True
        if self.min_psnr is not None:
            options["min_psnr"] = float(self.min_psnr)
        return options


_DEFAULT_BUILD = NDFConfig().build_options()


def default_location(source: RawSource, config: NDFConfig) -> str:
    """Where a named dataset's shards are read from (and built into)."""
    given = os.fspath(config.location) if config.location else os.environ.get(source.env_var)
    if given:
        return given if is_url(given) else os.path.abspath(os.path.expanduser(given))
    home = os.environ.get("NDF_DATASETS_HOME") or os.path.join("~", ".cache", "ndf_datasets")
    home = home if is_url(home) else os.path.abspath(os.path.expanduser(home))
    options = config.build_options()
    suffix = ""
    if options != _DEFAULT_BUILD:
        suffix = "-" + hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]
    return _join(home, source.name + suffix)


# ----------------------------------------------------------------------------- shards: list, read, write


def _list_names(location: str, storage_options: dict) -> list[str]:
    """File names directly under ``location`` (``[]`` when it does not exist)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(location, **storage_options)
    try:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    except FileNotFoundError:
        return []


def _read_manifest(location: str, storage_options: dict) -> dict | None:
    try:
        return json.loads(read_url(_join(location, MANIFEST), **storage_options))
    except FileNotFoundError:
        return None


def list_shards(location: str, storage_options: dict | None = None) -> dict[str, list[str]]:
    """The shard URLs (``.tar``, ``.tar.gz``, ``.parquet``) under ``location`` by split, in shard order (``{}`` when none)."""
    names = _list_names(location, storage_options or {})
    splits: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        m = _SHARD.fullmatch(name)
        if m:
            splits.setdefault(m["split"], []).append((int(m["index"]), _join(location, name)))
    return {split: [url for _, url in sorted(items)] for split, items in splits.items()}


def iter_shard(url: str, storage_options: dict | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {extension: bytes})`` for each sample of a WebDataset tar shard, streaming.

    See :func:`ndf_datasets.data.shards.iter_shard` (``.tar`` and ``.tar.gz``).

    Raises:
        NDFFormatError: the shard is not a readable tar file (named by its URL).
        NDFLimitError: a member larger than ``LIMITS['max_file_bytes']``.
    """
    return shards.iter_shard(url, storage_options)


def _example(shard: str, key: str, parts: dict[str, bytes], base: rows.BaseLookup | None = None) -> dict[str, Any]:
    """One dataset row from one WebDataset sample (see :func:`.rows.example`)."""
    return rows.example(shard, key, parts, base)


def list_files(location: str, manifest: dict, storage_options: dict) -> dict[str, list[list[tuple[str, int | None]]]]:
    """The ``files`` layout: per split, one list of ``(url, label)`` per statistics unit (a "shard")."""
    classes = list(manifest.get("classes") or [])
    out: dict[str, list[list[tuple[str, int | None]]]] = {}
    for split, info in (manifest.get("splits") or {}).items():
        for entry in info.get("shard_stats", []):
            stats = json.loads(read_url(_join(location, entry["stats"]), 1 << 28, **storage_options))
            files = [_join(location, f) for f in stats.get("files", [])]
            labels = stats.get("labels") or [None] * len(files)
            out.setdefault(split, []).append(list(zip(files, labels)))
        if split in out:
            continue
        raise FileNotFoundError(f"{location}: the manifest lists no files for split {split!r}")
    if not out and classes is not None:
        raise FileNotFoundError(f"{location}: a files-layout manifest without splits")
    return out


def write_shard(path: str, samples: list[tuple[str, bytes, int, dict]]) -> None:
    """Write one WebDataset shard: ``<key>.ndf``, ``<key>.cls``, ``<key>.json`` per sample (deterministic, atomic)."""
    shards.write_shard(path, [shards.Sample(key, blob, int(label), meta) for key, blob, label, meta in samples])


# ----------------------------------------------------------------------------- building a cache


def _publish(tmp: str, location: str) -> None:
    """Move a finished build into place (replacing an old one); a concurrent finished build wins."""
    if os.path.isdir(location):
        shutil.rmtree(location)
    try:
        os.replace(tmp, location)
    except OSError:
        if not os.path.exists(_join(location, MANIFEST)):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def build_cache(source: RawSource, raw_dir: str, location: str, config: NDFConfig) -> str:
    """Build NDF shards for a named dataset from its raw copy into a local ``location``.

    Fits a shared base on the (capped) train split (or takes ``config.base``), saves it as
    ``<hash>.ndfbase``, encodes every split as records into ``ndf convert``'s default shards
    (``<split>-NNNNNN.tar.gz``) and writes :data:`MANIFEST`. The raw copy may be the official
    one or what torchvision downloads (``cifar-10-batches-py``, ``MNIST/raw``).
    The build happens in a temporary sibling folder that is renamed into place at the end.

    Returns:
        ``location``.

    Raises:
        ValueError: ``location`` is a URL (build locally, then upload the folder).
        FileNotFoundError, ValueError: a missing or malformed raw file.
    """
    if is_url(location):
        raise ValueError(
            f"building writes a local folder, but the location is {location}; "
            "set location= or NDF_DATASETS_HOME to a local folder and upload it afterwards"
        )
    options = _storage_options(raw_dir)
    detected = sources.detect_kind(raw_dir, options)
    kind = detected if detected in source.kinds else (source.kinds[0] if source.kinds else None)
    tmp = f"{location}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        convert(
            raw_dir,
            tmp,
            kind=kind,
            name=source.name,
            psnr=config.psnr,
            mean_psnr=config.mean_psnr,
            min_psnr=config.min_psnr,
            steps=config.steps,
            seed=config.seed,
            device=config.device,
            shard_size=config.shard_size,
            max_images=config.max_images,
            base_epochs=config.base_epochs,
            base=config.base,  # None: fit one; else a trained base or a zoo name
            storage_options=options,
            progress=config.progress,
            distributed=False,
        )
        _publish(tmp, location)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return location


# ----------------------------------------------------------------------------- the builder


class NDFDatasetBuilder(datasets.GeneratorBasedBuilder):
    """Reads NDF shards (tar, Parquet) or files; for named datasets, builds them from a raw copy first."""

    BUILDER_CONFIG_CLASS = NDFConfig
    BUILDER_CONFIGS: ClassVar[list[NDFConfig]] = [
        NDFConfig(name="shards", version="1.0.0", description="NDF WebDataset shards from data_dir / data_files"),
        NDFConfig(name="cifar10", version="1.0.0", source="cifar10", description="CIFAR-10 as NDF records"),
        NDFConfig(name="mnist", version="1.0.0", source="mnist", description="MNIST as NDF records"),
    ]
    DEFAULT_CONFIG_NAME = "shards"

    @property
    def _source(self) -> RawSource | None:
        return RAW_SOURCES[self.config.source] if self.config.source else None

    def _location(self) -> str | None:
        """Where the shards are (``None`` when a ``shards`` config was given nothing)."""
        if self._source is not None:
            return default_location(self._source, self.config)
        if self.config.data_dir:
            location = os.fspath(self.config.data_dir).rstrip("/")
            return location if is_url(location) else os.path.abspath(location)
        if self.config.data_files:
            first = next(iter(f for files in self.config.data_files.values() for f in files))
            return first.rsplit("/", 1)[0]
        return None

    def _storage(self, url: str) -> dict[str, Any]:
        return _storage_options(url, self.storage_options)

    def _features(self, location: str | None, classes: list[str] | None) -> datasets.Features:
        label = datasets.ClassLabel(names=list(classes)) if classes else datasets.Value("int64")
        return datasets.Features(
            {
                "image": NDFImage(base=location),
                "label": label,
                "key": datasets.Value("string"),
                "json": datasets.Value("string"),
            }
        )

    def _info(self) -> datasets.DatasetInfo:
        source = self._source
        return datasets.DatasetInfo(
            description=self.config.description or "",
            features=self._features(self._location(), list(source.classes) if source else None),
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        location = self._location()
        if location is None:
            raise ValueError('load_dataset("ndf") needs data_dir= (a folder or URL of NDF shards) or data_files=')
        options = self._storage(location)
        if self._source is not None:
            self._ensure_built(location, options, bool(getattr(dl_manager.download_config, "force_download", False)))
        manifest = _read_manifest(location, options) or {}
        if self.config.source is None and self.config.data_files:
            splits = {str(s): list(files) for s, files in self.config.data_files.items()}
        elif manifest.get("layout") == "files":
            splits = list_files(location, manifest, options)
        else:
            splits = list_shards(location, options)
        if not splits:
            raise FileNotFoundError(
                f"no NDF shards (<split>-NNNNNN.tar[.gz] or .parquet) and no files-layout manifest found at {location}"
            )
        if self._source is None and manifest.get("classes"):
            self.info.features = self._features(location, manifest["classes"])
        self._preload_bases(location, options)
        digests = _digests(manifest)
        return [
            datasets.SplitGenerator(
                name=s, gen_kwargs={"shards": units, "digests": [_digest(digests, u) for u in units]}
            )
            for s, units in sorted(splits.items())
        ]

    def _ensure_built(self, location: str, options: dict, force: bool) -> None:
        """Build a named dataset's cache from ``data_dir`` when it has no shards (or on force_redownload)."""
        built = bool(list_shards(location, options)) or _read_manifest(location, options) is not None
        if built and not (force and self.config.data_dir):
            return
        if not self.config.data_dir:
            source = self._source
            raise FileNotFoundError(
                f"{source.name}: no NDF shards at {location}. Point location= or ${source.env_var} at published "
                f"shards, or build them once from a raw copy with data_dir=... (layout: {source.layout})"
            )
        build_cache(self._source, os.fspath(self.config.data_dir), location, self.config)

    def _preload_bases(self, location: str, options: dict) -> None:
        """Load the shared bases found next to the shards, so this process decodes without re-reading them."""
        self._bases: dict[bytes, SharedBase] = {}
        for name in _list_names(location, options):
            if name.endswith(BASE_SUFFIX):
                base = load_base_cached(_join(location, name), **options)
                self._bases[base.hash] = base

    def _base_lookup(self, base_hash: bytes) -> SharedBase | list[SharedBase]:
        """The preloaded base a record names by its hash; for a compact record, the candidates its
        tag allows (all of them for version 3, which names none): the codec tries them by CRC."""
        found = [b for h, b in getattr(self, "_bases", {}).items() if h.startswith(base_hash)]
        if len(base_hash) < 8 and found:
            return found
        if len(found) != 1:
            raise NDFBaseError(
                f"{len(found)} bases next to the shards match the record's base {base_hash.hex()}", source=str(self._location())
            )
        return found[0]

    def _generate_examples(self, shards: list, digests: list) -> Iterator[tuple[Key, dict[str, Any]]]:
        for shard_index, (shard, digest) in enumerate(zip(shards, digests)):
            if isinstance(shard, list):  # the files layout: one unit's (url, label) pairs
                generated = rows.file_rows(shard, self._storage(shard[0][0]) if shard else {})
            elif shard.endswith(".parquet"):
                generated = rows.parquet_rows(shard, self._storage(shard), digest)
            else:
                generated = rows.tar_rows(shard, self._storage(shard), self._base_lookup)
            for item_index, row in enumerate(generated):
                yield Key(shard_index, item_index), row


def _digests(manifest: dict) -> dict[str, str]:
    """Shard file name -> SHA-256, from the manifest."""
    return {
        e["shard"]: e["sha256"]
        for info in (manifest.get("splits") or {}).values()
        for e in info.get("shard_stats", [])
        if "shard" in e and "sha256" in e
    }


def _digest(digests: dict[str, str], unit: Any) -> str | None:
    return digests.get(unit.rsplit("/", 1)[-1]) if isinstance(unit, str) else None
