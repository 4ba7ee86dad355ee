"""Errors of the WebDataset adapter: :class:`NDFDecodeError`, and :class:`SkipCounter`, an error policy that counts."""

from __future__ import annotations

import warnings

from ...codec import NDFBaseError, NDFError

__all__ = ["NDFDecodeError", "SkipCounter"]


class NDFDecodeError(NDFError):
    """A sample's ``.ndf`` member could not be decoded; raised ``from`` the NDFError saying why.

    Like WebDataset's ``DecodingError``, but with a message naming the shard, the sample, the
    member and (when known) the byte offset inside the member.

    Attributes:
        key: the sample's ``__key__``.
        url: the shard's ``__url__``.
        member: the member's extension (``"ndf"``; ``"cls"`` for a label that contradicts
            the ``.ndf`` header).
        reason: the underlying error's message.
        member_offset: byte offset of the damage inside the member, or ``None``.
    """

    def __init__(
        self, key: str | None, url: str | None, member: str = "ndf", reason: str = "", member_offset: int | None = None
    ):
        self.key = key
        self.url = url
        self.member = member
        self.reason = reason
        self.member_offset = member_offset
        where = f" at byte {member_offset} of the member" if member_offset is not None else ""
        message = f"can not decode member {key}.{member}{where} (sample {key!r})"
        super().__init__(f"{message}: {reason}" if reason else message, source=url or "<unknown shard>")

    def __reduce__(self):
        return (type(self), (self.key, self.url, self.member, self.reason, self.member_offset))


def _wds_decoding_error(exc: BaseException) -> bool:
    from webdataset.autodecode import DecodingError

    return isinstance(exc, DecodingError)


def _is_base_error(exc: BaseException) -> bool:
    return isinstance(exc, NDFBaseError) or (_wds_decoding_error(exc) and isinstance(exc.__cause__, NDFBaseError))


def _describe(exc: BaseException) -> str:
    if _wds_decoding_error(exc):
        return f"{exc.url}: sample {exc.key!r} member {exc.k!r}: {type(exc.__cause__).__name__}: {exc.__cause__}"
    return f"{type(exc).__name__}: {exc}"


class SkipCounter:
    """A WebDataset error handler that skips bad samples and counts them.

    Pass it as ``handler=`` of ``.map(ndf_samples(...))``, ``.decode(...)`` or
    ``wds.WebDataset(...)``. Shared-base errors (:class:`~ndf_datasets.NDFBaseError`) are
    re-raised: a missing base would otherwise silently skip every record.

    Counts are per process: in DataLoader workers each worker counts its own skips.

    Args:
        warn: also issue a :class:`UserWarning` per skipped sample.
        limit: re-raise once more than ``limit`` samples were skipped (``None``: no limit).
        keep: how many error descriptions to keep in :attr:`errors`.

    Attributes:
        count: samples skipped so far.
        errors: descriptions (shard, key, reason) of the first ``keep`` skipped samples.
    """

    def __init__(self, warn: bool = True, limit: int | None = None, keep: int = 100):
        self.warn = warn
        self.limit = limit
        self.keep = keep
        self.count = 0
        self.errors: list[str] = []

    def __call__(self, exc: BaseException) -> bool:
        """Record ``exc`` and return ``True`` (skip the sample), or re-raise it.

        Raises:
            NDFBaseError: (or WebDataset's wrapper of it) always re-raised.
            Exception: ``exc``, once more than ``limit`` samples were skipped.
        """
        if _is_base_error(exc):
            raise exc
        self.count += 1
        text = _describe(exc)
        if len(self.errors) < self.keep:
            self.errors.append(text)
        if self.warn:
            warnings.warn(f"skipping sample: {text}", stacklevel=2)
        if self.limit is not None and self.count > self.limit:
            raise exc
        return True

    def __repr__(self) -> str:
        return f"SkipCounter(count={self.count})"
