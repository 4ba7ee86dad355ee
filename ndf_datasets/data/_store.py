"""An output folder, local or at an fsspec URL: list, read, write atomically, remove.

Used by :mod:`ndf_datasets.data.conversion`; every write goes through :func:`ndf_datasets.codec.io.write_atomic`,
so a file under its final name is always complete.
"""

from __future__ import annotations

import os
from typing import Any

from ..codec import TMP_SUFFIX, is_url, read_url, write_atomic

__all__ = ["Store"]


class Store:
    """Files under one folder or URL prefix, named by ``/``-separated relative names.

    Args:
        location: local folder or fsspec URL (``s3://bucket/prefix``, ``file:///...``).
        storage_options: fsspec options for URLs.
    """

    def __init__(self, location: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> None:
        location = os.fspath(location)
        if location.startswith("file://"):
            location = location[len("file://") :]
        self.remote = is_url(location)
        self.location = location.rstrip("/") if self.remote else os.path.abspath(os.path.expanduser(location))
        self.options = dict(storage_options or {}) if self.remote else {}

    def path(self, name: str) -> str:
        """The full path or URL of ``name``."""
        return f"{self.location}/{name}" if self.remote else os.path.join(self.location, *name.split("/"))

    def _fs(self) -> tuple[Any, str]:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.location, **self.options)
        fs.invalidate_cache()
        return fs, root.rstrip("/")

    def read(self, name: str, limit: int | None = None) -> bytes | None:
        """The bytes of ``name``, or ``None`` when it does not exist."""
        try:
            return read_url(self.path(name), limit, **self.options)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write(self, name: str, data: bytes) -> None:
        """Write ``name`` atomically (see :func:`~ndf_datasets.codec.io.write_atomic`)."""
        write_atomic(self.path(name), data, **self.options)

    def names(self) -> list[str]:
        """Every file under the location, as sorted relative names (``[]`` when it does not exist)."""
        if self.remote:
            fs, root = self._fs()
            try:
                found = fs.find(root)
            except FileNotFoundError:
                return []
            return sorted(p[len(root) + 1 :] for p in found if p.startswith(root + "/"))
        out = []
        for folder, dirs, files in os.walk(self.location):
            rel = os.path.relpath(folder, self.location)
            out += [f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}" for f in files]
        return sorted(out)

    def sizes(self) -> dict[str, tuple[int, int | None]]:
        """Every file under the location: relative name -> ``(bytes, bytes allocated on disk)``.

        The allocated size (file-system blocks, what ``du`` counts) is known for local folders
        only (``None`` for URLs, where storage bills the bytes).
        """
        if self.remote:
            fs, root = self._fs()
            try:
                found = fs.find(root, detail=True)
            except FileNotFoundError:
                return {}
            return {p[len(root) + 1 :]: (int(info.get("size") or 0), None) for p, info in found.items() if p.startswith(root + "/")}
        out = {}
        for name in self.names():
            st = os.stat(self.path(name))
            out[name] = (st.st_size, getattr(st, "st_blocks", 0) * 512 or st.st_size)
        return out

    def remove(self, name: str) -> None:
        """Delete ``name`` if it exists."""
        if self.remote:
            fs, root = self._fs()
            try:
                fs.rm_file(f"{root}/{name}")
            except FileNotFoundError:
                pass
            return
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def remove_temps(self) -> list[str]:
        """Delete temporary files a killed :func:`~ndf_datasets.codec.io.write_atomic` left behind."""
        stale = [n for n in self.names() if n.rsplit("/", 1)[-1].startswith(".") and n.endswith(TMP_SUFFIX)]
        for n in stale:
            self.remove(n)
        return stale
