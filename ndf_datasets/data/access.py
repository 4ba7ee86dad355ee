"""Random access into a converted dataset: :class:`NDFShardDataset`, ``ds[i]`` in one range read.

``ndf convert`` writes a small index per tar shard (:mod:`.shardindex`), so a map-style
dataset can fetch any record without reading its shard: one read of the manifest, one of a
shard's index the first time that shard is touched, then **one range read per record**
(``fs.cat_file(path, start, end)``: an HTTP ``Range`` request on S3), through a byte-limited
LRU cache (:class:`RangeCache`). ``DataLoader(ds, shuffle=True)`` then shuffles over the whole
dataset with no shard downloaded whole. The layouts:

* ``webdataset`` ``.tar``: the record's own bytes are read;
* ``webdataset`` ``.tar.gz``: the record's *group* (the shard's gzip stream restarts about
  every 64 KiB of tar, :data:`~ndf_datasets.data.shards.GROUP_BYTES`; tens of KiB compressed),
  decompressed up to the record; neighbours then come from the cache;
* ``parquet``: the ``image`` column of the record's row group (pyarrow range reads);
* ``files``: the record's file.

Every record is checked when it is decoded (its CRC, with the base for compact records), and
an index is checked (size, CRC, the shard's size) before it is used, so a damaged or stale
file is an :class:`~ndf_datasets.NDFError` naming it, never a wrong image.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..codec import NDFFormatError, SharedBase, Size, load_base_cached, read_fields, render_fields
from ._store import Store
from .job import MANIFEST
from .shardindex import MAX_INDEX_BYTES, ShardIndex, inflate_group

__all__ = ["NDFShardDataset", "RangeCache"]


class RangeCache:
    """A least-recently-used cache of byte strings (or values of a given size) with a limit on their total size.

    Args:
        max_bytes: the most bytes held (an item larger than that is returned, not kept).

    Attributes:
        hits, misses: lookups answered from the cache / loaded.
        loaded_bytes: bytes loaded on misses (what was read from storage).
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = self.loaded_bytes = 0

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Any, load: Callable[[], Any], size: Callable[[Any], int] = len) -> Any:
        """The value cached under ``key``, or ``load()``'s (kept, evicting the least recently used).

        ``size(value)`` is what the value counts against the limit (``len``: bytes).
        """
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
        data = load()
        n = int(size(data))
        with self._lock:
            self.misses += 1
            self.loaded_bytes += n
            if n <= self.max_bytes and key not in self._items:
                self._items[key] = (data, n)
                self._size += n
                while self._size > self.max_bytes:
                    _, (_, old) = self._items.popitem(last=False)
                    self._size -= old
        return data

    def clear(self) -> None:
        """Drop everything (the counters stay)."""
        with self._lock:
            self._items.clear()
            self._size = 0


class NDFShardDataset(torch.utils.data.Dataset):
    """A map-style dataset over what ``ndf convert`` wrote: ``ds[i] -> (image, label)``.

    ``i`` runs over the split in conversion order (sample key ``f"{i:06d}"`` of the source's
    split), so ``ds[i]`` is exactly the image iteration yields for that key. Works on a local
    folder or any fsspec URL (``s3://bucket/prefix``); DataLoader workers each get their own
    cache.

    Example::

        ds = NDFShardDataset("s3://bucket/cifar10", "train", size=32,
                             storage_options={"anon": False}, cache_bytes=256 << 20)
        loader = DataLoader(ds, batch_size=256, shuffle=True, num_workers=8)

    Args:
        location: the conversion's output folder or URL (it holds ``ndf_dataset.json``).
        split: the split to read.
        size: output size (``None``: each image's own; ``int``: square; ``(h, w)``).
        transform, target_transform: applied to the image tensor / the label.
        cache_bytes: the byte limit of the LRU cache of ranges read (per process).
        storage_options: fsspec options for URLs.
        device: where images are rendered (``"cpu"`` in DataLoader workers).

    Raises:
        FileNotFoundError: no manifest at ``location``.
        ValueError: the manifest has no such split, or is not JSON.
    """

    def __init__(
        self,
        location: str | os.PathLike,
        split: str = "train",
        size: Size = None,
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[int | None], Any] | None = None,
        cache_bytes: int = 64 << 20,
        storage_options: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        self.store = Store(location, storage_options)
        raw = self.store.read(MANIFEST, limit=1 << 28)
        if raw is None:
            raise FileNotFoundError(f"{self.store.path(MANIFEST)}: no manifest; is this a folder ndf convert wrote?")
        try:
            manifest = json.loads(raw)
            info = manifest["splits"][split]
        except ValueError as exc:
            raise ValueError(f"{self.store.path(MANIFEST)}: not JSON ({exc})") from None
        except KeyError:
            raise ValueError(f"{self.store.path(MANIFEST)}: no split {split!r}") from None
        self.split, self.size, self.device = split, size, device
        self.transform, self.target_transform = transform, target_transform
        self.layout = manifest.get("layout", "webdataset")
        self.base_name, self.base_hash = manifest["base"], bytes.fromhex(manifest["base_hash"])
        self.units = list(info["shard_stats"])
        self.starts = [0]
        for e in self.units:
            self.starts.append(self.starts[-1] + int(e["count"]))
        self.cache = RangeCache(cache_bytes)
        #: range reads of shards made by this process, and the bytes they returned
        self.reads = self.read_bytes = 0
        self._indexes: dict[int, Any] = {}
        self._fs: Any = None

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: no open file system, an empty cache
        state = dict(self.__dict__)
        state["_fs"], state["_indexes"] = None, {}
        state["cache"] = RangeCache(self.cache.max_bytes)
        state["reads"] = state["read_bytes"] = 0
        return state

    def _base(self) -> SharedBase:
        base = load_base_cached(self.store.path(self.base_name), **self.store.options)
        if base.hash != self.base_hash:
            raise NDFFormatError(f"the base is not the one the manifest names ({self.base_hash.hex()})",
                                 source=self.store.path(self.base_name))  # fmt: skip
        return base

    def _locate(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for split {self.split!r} of {len(self)} images")
        i %= len(self)
        u = bisect.bisect_right(self.starts, i) - 1
        return u, i - self.starts[u]

    def _fetch(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``start..end-1`` of ``name``: a seek and read locally, a range request on a URL."""
        self.reads += 1
        if not self.store.remote:
            with open(self.store.path(name), "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        else:
            if self._fs is None:
                import fsspec

                self._fs = fsspec.core.url_to_fs(self.store.location, **self.store.options)
            fs, root = self._fs
            data = fs.cat_file(f"{root.rstrip('/')}/{name}", start=start, end=end)
        self.read_bytes += len(data)
        return data

    def _index(self, u: int) -> Any:
        if u not in self._indexes:
            entry = self.units[u]
            if self.layout == "webdataset":
                name = entry.get("index")
                raw = self.store.read(name, limit=MAX_INDEX_BYTES) if name else None
                if raw is None:
                    raise FileNotFoundError(f"{self.store.path(name or entry['stats'])}: shard {entry['shard']} has no "
                                            "index (converted before indexes existed: run ndf convert again to add it)")  # fmt: skip
                index = ShardIndex.parse(raw, self.store.path(name))
                if index.shard_bytes != entry["shard_bytes"] or len(index) != entry["count"]:
                    raise NDFFormatError(f"the index does not describe shard {entry['shard']} (size or count differ)",
                                         source=self.store.path(name))  # fmt: skip
            elif self.layout == "files":
                raw = self.store.read(entry["stats"], limit=1 << 28)
                index = json.loads(raw)["files"] if raw is not None else None
                if index is None or len(index) != entry["count"]:
                    raise FileNotFoundError(f"{self.store.path(entry['stats'])}: missing or not matching the manifest")
            else:
                index = _ParquetShard(self, entry["shard"])
            self._indexes[u] = index
        return self._indexes[u]

    def record(self, i: int) -> bytes:
        """The raw record of image ``i`` (one range read unless cached)."""
        u, j = self._locate(i)
        entry, index = self.units[u], self._index(u)
        if self.layout == "files":
            name = index[j]
            return self.cache.get(name, lambda: self.store.read(name) or _missing(self.store.path(name)))
        if self.layout == "parquet":
            return index.record(j)
        name = entry["shard"]
        start, end, inner, reach = index.locate(j)
        data = self.cache.get((name, start, end), lambda: _inflated(self, name, index, start, end, reach))
        blob = data[inner : inner + index.lengths[j]]
        if len(blob) != index.lengths[j]:
            raise NDFFormatError(f"record {j} ends past bytes {start}..{end}: not the indexed shard?",
                                 source=self.store.path(name))  # fmt: skip
        return blob

    def key(self, i: int) -> str:
        """The sample key of image ``i`` (``f"{i:06d}"``, as in the shards)."""
        u, j = self._locate(i)
        return f"{self.starts[u] + j:06d}"

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, Any]]:
        """Images ``indices``, decoded together (the DataLoader's batched fetch)."""
        blobs = [self.record(int(i)) for i in indices]
        fields = read_fields(blobs, self._base(), [f"{self.store.location}[{self.split}][{int(i)}]" for i in indices])
        images: list[Any] = [None] * len(fields)
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, f in enumerate(fields):
            by_size.setdefault((f.arch.height, f.arch.width) if self.size is None else (0, 0), []).append(k)
        for shape, ks in by_size.items():
            x = render_fields([fields[k] for k in ks], self.size if self.size is not None else shape, self.device)
            for k, img in zip(ks, x):
                images[k] = img
        out = []
        for img, f in zip(images, fields):
            label = f.label
            out.append((self.transform(img) if self.transform else img,
                        self.target_transform(label) if self.target_transform else label))  # fmt: skip
        return out


def _missing(path: str) -> bytes:
    raise FileNotFoundError(f"{path}: a file the manifest lists is missing")


def _inflated(ds: NDFShardDataset, name: str, index: ShardIndex, a: int, b: int, reach: int) -> bytes:
    """One range of a shard; a gzip group comes back decompressed (what the cache keeps)."""
    data = ds._fetch(name, a, b)
    if len(data) != b - a:
        raise NDFFormatError(f"read {len(data)} of bytes {a}..{b} (truncated shard?)", source=ds.store.path(name))
    return inflate_group(data, reach, ds.store.path(name)) if index.compressed else data


class _ParquetShard:
    """Row-group reads of a Parquet shard's ``image`` column (the footer read once per process)."""

    def __init__(self, ds: NDFShardDataset, name: str) -> None:
        from .parquet import ROW_GROUP, _pyarrow

        _, pq = _pyarrow()
        self.ds, self.name, self.rows = ds, name, ROW_GROUP
        if ds.store.remote:
            import fsspec

            fs, root = fsspec.core.url_to_fs(ds.store.location, **ds.store.options)
            handle = fs.open(f"{root.rstrip('/')}/{name}", "rb", cache_type="none")
        else:
            handle = open(ds.store.path(name), "rb")
        self.file = pq.ParquetFile(handle)

    def record(self, j: int) -> bytes:
        g, r = divmod(j, self.rows)

        def load() -> list[bytes]:
            return [v["bytes"] for v in self.file.read_row_group(g, columns=["image"]).column("image").to_pylist()]

        blobs = self.ds.cache.get((self.name, g), load, size=lambda v: sum(map(len, v)))
        if r >= len(blobs):
            raise NDFFormatError(f"row group {g} has {len(blobs)} rows, not {r + 1}", source=self.ds.store.path(self.name))
        return blobs[r]
