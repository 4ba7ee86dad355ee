"""Range coding of symbols under per-symbol quantised Gaussians (the learned codecs' entropy coder).

Each symbol is an integer in ``[lo, hi]`` coded under a Gaussian of a given mean and standard
deviation, quantised to unit bins whose outermost bins take the tails (``constriction``'s
``QuantizedGaussian``). Means come from the exact entropy-parameter path and standard
deviations from the constant table :data:`~ndf_datasets.codec.exact.SCALES`, so the encoder and
the decoder hand the coder identical float64 values.

One record is one stream; its bytes are the coder's 32-bit words, little-endian, with the zero
bytes at the end of the last word dropped (:func:`finish`); :func:`open_stream` restores them.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import NDFFormatError
from .exact import SCALES

__all__ = ["StreamEncoder", "StreamDecoder", "open_stream", "SCALE_TABLE"]

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

    def finish(self) -> bytes:
        """The stream's bytes: the 32-bit words with trailing zero bytes of the last word dropped."""
        data = self._enc.get_compressed().astype("<u4").tobytes()
        end = len(data)
        while end > len(data) - 3 and end > 0 and data[end - 1] == 0:
            end -= 1
        return data[:end]


class StreamDecoder:
    """Reads back what :class:`StreamEncoder` wrote, in the same order."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        import constriction

        self.source = source
        words = np.frombuffer(bytes(data) + b"\0" * ((-len(data)) % 4), dtype="<u4").astype(np.uint32)
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


def open_stream(data: bytes, source: str = "<bytes>") -> StreamDecoder:
    """A decoder over one record's payload."""
    return StreamDecoder(data, source)
