"""A conversion split into parts another engine can run: prepare once, encode units anywhere, finish once.

:func:`~ndf_datasets.data.convert` runs every part in one process (or over torchrun ranks).
An engine that schedules work itself (Ray Data: :mod:`ndf_datasets.integrations.ray`) uses
this module instead:

1. :func:`prepare_job` (the driver): checks ``OUT`` (job file, resume), fits or reuses the
   base and saves it there, and plans the units (shards); it returns a :class:`Job`;
2. :meth:`Job.unit_files` (any worker, from :meth:`Job.spec` re-opened with :meth:`Job.open`):
   the files of one unit as ``(name, bytes)`` in the order to write them, or ``None`` when
   the unit is already complete and verified in ``OUT``; the bytes are exactly those the
   single-process conversion writes (the same function makes them);
3. :meth:`Job.write` (a writer): writes them atomically, in that order;
4. :meth:`Job.finish` (the driver): the manifest and the dataset card, once every unit is done.

A unit's files are a pure function of its images and the settings, so running a unit twice
(a retried task) writes the same bytes under the same names: no duplicates, whatever fails.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..codec import NDFError, SharedBase, base_filename, is_url, load_base
from ._store import Store
from .conversion import _auto, _finish, _make_settings, _open, _setup, convert
from .job import ConvertSettings, _Unit
from .shards import parse_shard
from .sources import Source, open_source
from .units import _finished, _unit_files

__all__ = ["Job", "JobSpec", "Unit", "prepare_job", "write_unit", "pack_files", "unpack_files"]

#: a unit (shard) of a job: ``split``, ``index``, ``start``, ``stop``, ``ordinal``, ``name``
Unit = _Unit
_SETTINGS = [n for n in ConvertSettings.__dataclass_fields__ if n != "base"]
_DEFAULTS = {n: p.default for n, p in inspect.signature(convert).parameters.items() if n in _SETTINGS}


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to re-open a prepared job (small; sent to every worker).

    Attributes:
        src: the source's location (path, URL or list of files) or an opened ``Source``.
        out: the output location.
        settings: the job's settings.
        base_hash: the hex hash of the base saved in ``out``.
        kind: the source kind, if forced.
        storage_options: fsspec options (never written anywhere).
    """

    src: Any
    out: str
    settings: ConvertSettings
    base_hash: str
    kind: str | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)


class Job:
    """A prepared conversion (see the module docstring); make one with :func:`prepare_job` or :meth:`open`."""

    def __init__(self, spec: JobSpec, base: SharedBase | None = None, name: str | None = None,
                 opened: tuple | None = None) -> None:  # fmt: skip
        self._spec = spec
        self.settings = spec.settings
        opened = opened or _open(spec.src, spec.out, spec.storage_options, spec.kind, spec.settings)
        self.source, self.store, self.units, self.counts = opened
        if base is None:
            path = base_filename(bytes.fromhex(spec.base_hash))
            base = load_base(self.store.read(path), source=self.store.path(path))
        if base.hash.hex() != spec.base_hash:
            raise NDFError(f"the base in OUT is not {spec.base_hash}", source=self.store.location)
        self.base = base
        self.name = name or self.source.name

    @classmethod
    def open(cls, spec: JobSpec) -> Job:
        """Re-open a prepared job in a worker (opens the source, loads the base from ``OUT``)."""
        return cls(spec)

    def spec(self) -> JobSpec:
        """What a worker needs to :meth:`open` this job."""
        return self._spec

    def unit(self, ordinal: int) -> Unit:
        """The unit with this ordinal (0 .. ``len(units)-1``)."""
        return self.units[ordinal]

    def unit_files(self, unit: Unit, device: str | None = None) -> list[tuple[str, bytes]] | None:
        """The unit's files (``(name, bytes)``, in writing order), or ``None`` if ``OUT`` holds it complete and valid."""
        if _finished(self.store, self.source, unit, self.base, self.settings) is not None:
            return None
        return _unit_files(self.source, unit, self.base, self.settings, device or self.settings.device)

    def write(self, files: list[tuple[str, bytes]]) -> None:
        """Write a unit's files (see :func:`write_unit`)."""
        write_unit(self.store, files)

    def finish(self) -> dict[str, Any]:
        """Write the manifest and the card (every unit must be complete); returns the manifest."""
        return _finish(self.store, self.source, self.settings, self.units, self.base, self.name, self.counts)


def prepare_job(
    src: Any,
    out: str | os.PathLike,
    *,
    kind: str | None = None,
    name: str | None = None,
    storage_options: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    base: SharedBase | str | os.PathLike | None = "auto",
    **settings: Any,
) -> Job:
    """Prepare a conversion in this process: check ``OUT``, fit or reuse the base, plan the units.

    Takes :func:`~ndf_datasets.data.convert`'s arguments (``layout``, ``psnr``, ``shard_size``,
    ``base``, ...; the same defaults) except the torchrun ones.

    Raises:
        TypeError: an argument ``convert`` does not have.
        FileExistsError, ValueError: as :func:`~ndf_datasets.data.convert`.
    """
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"prepare_job() got unexpected arguments {unknown}")
    settings = {**_DEFAULTS, **settings}
    opened_src = src
    if (isinstance(base, str) and base == "auto") or isinstance(settings["psnr"], str):
        opened_src = (
            src if isinstance(src, Source) else open_source(src, storage_options, kind=kind, mode=settings["mode"])
        )
        base, settings["psnr"] = _auto(opened_src, base, settings["psnr"], settings["mode"])
    conf, given = _make_settings(base, **settings)
    opened = _open(opened_src, out, storage_options, kind, conf)
    source, store, _, counts = opened
    fitted = _setup(source, store, conf, counts, given, conf.device, progress, force)
    if isinstance(src, (list, tuple)):
        where: Any = [os.path.abspath(os.fspath(s)) if not is_url(s) else os.fspath(s) for s in src]
    elif isinstance(src, (str, os.PathLike)):
        where = os.fspath(src) if is_url(src) else os.path.abspath(os.fspath(src))
    else:
        where = src  # an opened Source: workers get a copy of it
    return Job(JobSpec(where, store.location, conf, fitted.hash.hex(), kind, storage_options), fitted, name, opened)


def write_unit(store: Store, files: list[tuple[str, bytes]]) -> None:
    """Write a unit's files atomically in their order, checking first that a shard is the one its statistics describe.

    Raises:
        NDFError: a shard whose SHA-256 is not its statistics', or a tar shard that does not
            read back with that many samples (named by its path).
    """
    stats: dict[str, Any] = {}
    for name, data in files:
        if name.endswith(".json"):
            stats = json.loads(data)
        elif name == stats.get("shard"):
            if hashlib.sha256(data).hexdigest() != stats.get("sha256"):
                raise NDFError(f"shard {name} is not the one its statistics describe", source=store.path(name))
            if name.endswith((".tar", ".tar.gz")) and len(parse_shard(data, store.path(name))) != stats["count"]:
                raise NDFError(f"shard {name} does not hold {stats['count']} samples", source=store.path(name))
    for name, data in files:
        store.write(name, data)


def pack_files(files: list[tuple[str, bytes]]) -> bytes:
    """A unit's files as one byte string (to pass between processes): a JSON header line, then the bytes."""
    head = json.dumps([[name, len(data)] for name, data in files], separators=(",", ":")).encode("utf-8")
    return head + b"\n" + b"".join(data for _, data in files)


def unpack_files(packed: bytes, source: str = "<packed unit>") -> list[tuple[str, bytes]]:
    """The inverse of :func:`pack_files`, with every length checked.

    Raises:
        ValueError: malformed input (names ``source``).
    """
    head, sep, body = bytes(packed).partition(b"\n")
    try:
        entries = json.loads(head) if sep else None
        ok = isinstance(entries, list) and all(
            isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], int) and e[1] >= 0
            for e in entries
        )
    except ValueError:
        ok = False
    if not ok or sum(e[1] for e in entries) != len(body):
        raise ValueError(f"{source}: not a packed unit (bad header or lengths)")
    out, pos = [], 0
    for name, n in entries:
        out.append((name, body[pos : pos + n]))
        pos += n
    return out
