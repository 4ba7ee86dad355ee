"""Range coding of symbols under per-symbol quantised Gaussians (the learned codecs' entropy coder).

Each symbol is an integer in ``[lo, hi]`` coded under a Gaussian of a given mean and standard
deviation, quantised to unit bins whose outermost bins take the tails (``constriction``'s
``QuantizedGaussian``). Means come from the exact entropy-parameter path and standard
deviations from the constant table :data:`~ndf_datasets.codec.exact.SCALES`, so the encoder and
the decoder hand the coder identical float64 values.

One record is one stream. Its bytes are the coder's 32-bit words, **big-endian**, followed by
as few bytes as name a point of the coder's final interval, with every zero byte at the end
dropped: a reader reads the stream as if infinitely many zero bytes followed it
(:meth:`StreamEncoder.finish` explains the termination; it saves ~1.6 B a record against the
coder's own 32-bit seal). Compact records of version 1 stored the sealed words little-endian;
:func:`stream_from_v1` turns such a payload into this layout.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import NDFFormatError
from .exact import SCALES

__all__ = ["StreamEncoder", "StreamDecoder", "open_stream", "stream_from_v1", "SCALE_TABLE"]

#: :data:`~ndf_datasets.codec.exact.SCALES` as a float64 array (index -> standard deviation).
SCALE_TABLE = np.asarray(SCALES, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _family(lo: int, hi: int):
    import constriction

    return constriction.stream.model.QuantizedGaussian(lo, hi)


class StreamEncoder:
    """Accumulates the symbols of one record (call :meth:`encode` in decoding order)."""

    def __init__(self) -> None:
        import constriction

        self._enc = constriction.stream.queue.RangeEncoder()
        self._calls: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]] = []

    def encode(self, symbols: np.ndarray, scale_idx: np.ndarray, lo: int, hi: int, means: np.ndarray | None = None) -> None:
        """Code ``symbols`` (clipped by the caller to ``[lo, hi]``) with stds ``SCALES[scale_idx]``."""
        sym = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if sym.size == 0:
            return
        if sym.min() < lo or sym.max() > hi:
            raise ValueError(f"symbols fall outside [{lo}, {hi}]")
        std = SCALE_TABLE[np.asarray(scale_idx).ravel()]
        mu = np.zeros(sym.size) if means is None else np.ascontiguousarray(means, dtype=np.float64).ravel()
        self._enc.encode(sym, _family(lo, hi), mu, std)
        self._calls.append((sym, mu, std, lo, hi))

    def finish(self) -> bytes:
        """The stream's bytes, terminated as short as the coder's final interval allows.

        The range coder has emitted ``p`` whole words and holds an interval ``[lower, lower +
        range)`` of 64-bit values that continue them. Any number in that interval decodes to
        the same symbols, so instead of the coder's own seal (one more 32-bit word) the stream
        ends with the multiple of the largest power of two inside the interval, written
        big-endian with its zero bytes at the end dropped: about ``64 - log2(range)`` bits,
        rounded up to bytes. The result is checked by decoding it (~0.1 ms); if the check fails,
        the coder's own seal is written in the same layout, which is always valid.
        """
        if not self._calls:
            return b""
        pos, (lower, width) = self._enc.pos()
        words = self._enc.get_compressed()
        sealed = words.astype(">u4").tobytes().rstrip(b"\0")
        point = lower
        for shift in range(64, 0, -1):  # lower rounded up to a multiple of 2**shift, if still inside
            candidate = -(-lower >> shift) << shift
            if candidate < min(lower + width, 2**64):
                point = candidate
                break
        short = (words[:pos].astype(">u4").tobytes() + point.to_bytes(8, "big")).rstrip(b"\0")
        if len(short) < len(sealed) and _decodes(short, self._calls):
            return short
        return sealed


class StreamDecoder:
    """Reads back what :class:`StreamEncoder` wrote, in the same order."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        import constriction

        self.source = source
        words = _words(data)
        try:
            self._dec = constriction.stream.queue.RangeDecoder(words)
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise NDFFormatError(f"entropy-coded payload is malformed: {exc}", source=source) from None

    def decode(self, scale_idx: np.ndarray, lo: int, hi: int, means: np.ndarray | None = None) -> np.ndarray:
        """Decode ``len(scale_idx)`` symbols (int32)."""
        std = SCALE_TABLE[np.asarray(scale_idx).ravel()]
        if std.size == 0:
            return np.zeros(0, dtype=np.int32)
        mu = np.zeros(std.size) if means is None else np.ascontiguousarray(means, dtype=np.float64).ravel()
        try:
            out = self._dec.decode(_family(lo, hi), mu, std)
        except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:
            raise NDFFormatError(f"entropy-coded payload is malformed: {exc}", source=self.source) from None
        return np.asarray(out, dtype=np.int32)


def _words(data: bytes) -> np.ndarray:
    """A stream's bytes as the coder's words: big-endian, zero-padded, two zero words appended
    (the zeros a reader assumes after the end; the decoder may look that far ahead)."""
    data = bytes(data)
    words = np.frombuffer(data + b"\0" * ((-len(data)) % 4), dtype=">u4").astype(np.uint32)
    return np.concatenate([words, np.zeros(2, dtype=np.uint32)])


def _decodes(data: bytes, calls: list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]]) -> bool:
    """Whether ``data`` decodes to exactly the symbols of ``calls`` (the encoder's own check)."""
    import constriction

    dec = constriction.stream.queue.RangeDecoder(_words(data))
    try:
        return all(np.array_equal(dec.decode(_family(lo, hi), mu, std), sym) for sym, mu, std, lo, hi in calls)
    except (ValueError, RuntimeError, OverflowError, AssertionError):
        return False


def stream_from_v1(payload: bytes) -> bytes:
    """A version-1 payload (little-endian words, zero bytes at the end of the last word dropped)
    in the current layout: the same words, big-endian. Both decode to the same symbols."""
    payload = bytes(payload)
    words = np.frombuffer(payload + b"\0" * ((-len(payload)) % 4), dtype="<u4")
    return words.astype(">u4").tobytes().rstrip(b"\0")


def open_stream(data: bytes, source: str = "<bytes>") -> StreamDecoder:
    """A decoder over one record's payload."""
    return StreamDecoder(data, source)
