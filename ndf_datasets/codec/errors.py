"""Exception classes: every failure to read or decode NDF data is an :class:`NDFError`.

Each message names the source (file path, URL or ``<bytes>``), the byte offset when one is
known, and what is wrong, so a user can find the bad file in a dataset of millions.
"""

from __future__ import annotations

__all__ = [
    "NDFError",
    "NDFFormatError",
    "NDFChecksumError",
    "NDFVersionError",
    "NDFLimitError",
    "NDFBaseError",
    "NDFShardError",
]


class NDFError(Exception):
    """Base class of every error raised while reading, validating or decoding NDF data."""

    def __init__(self, message: str, *, source: str = "<bytes>", offset: int | None = None):
        self.message = message
        self.source = source
        self.offset = offset
        where = source if offset is None else f"{source} at byte {offset}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        # keep source/offset when the error crosses a process boundary (DataLoader workers)
        return (_rebuild, (type(self), self.message, self.source, self.offset, self.__dict__))


def _rebuild(cls: type, message: str, source: str, offset: int | None, state: dict) -> "NDFError":
    err = cls.__new__(cls)
    NDFError.__init__(err, message, source=source, offset=offset)
    err.__dict__.update(state)
    return err


class NDFFormatError(NDFError):
    """The bytes are not a well-formed NDF file (bad magic, bad field, inconsistent lengths)."""


class NDFChecksumError(NDFFormatError):
    """The stored CRC-32 does not match the content: the file is corrupted or truncated."""


class NDFVersionError(NDFFormatError):
    """The file declares a format version or architecture this library cannot read."""


class NDFLimitError(NDFFormatError):
    """A declared size or count exceeds a documented limit; nothing was allocated for it."""


class NDFBaseError(NDFError):
    """A record needs a shared base that was not given, or the given base is not the one
    the record was encoded with (content hashes differ)."""


class NDFShardError(NDFFormatError):
    """A shard (tar archive) is corrupted or truncated: a tar header with a bad checksum, or
    an end of file before the end-of-archive marker. ``source`` is the shard, ``offset`` the
    byte offset in the shard, :attr:`member` the member being read (or the last one read)."""

    def __init__(self, message: str, *, source: str = "<bytes>", offset: int | None = None, member: str | None = None):
        self.member = member
        super().__init__(message, source=source, offset=offset)
