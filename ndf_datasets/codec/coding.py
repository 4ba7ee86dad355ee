"""Quantisation and entropy coding of tensors, shared by the writer and the reader.

Every stored tensor is uniformly quantised with a step ``step`` to integer symbols in
``[lo, hi]`` and range-coded (the ``constriction`` library's range coder) under a quantised
Laplace model with parameters ``(mean, scale)`` given in symbol units. The encoder and the
decoder build their models from the *serialised* parameters (:meth:`TensorCode.canonical`),
so both sides always use bit-identical floats.

A standalone field stores a :class:`TensorCode` per tensor in its payload
(:func:`pack_codes`); a record for a shared base stores symbols only, its codes live in the
base (per-dataset quantisation tables).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import NDFFormatError, NDFLimitError
from .format import LIMITS

__all__ = ["TensorCode", "fit_code", "pack_codes", "unpack_codes", "encode_symbols", "decode_symbols", "SYMBOL_BOUND"]

#: Largest magnitude of a quantised symbol. Bounds the coder's alphabet.
SYMBOL_BOUND = 1 << 15

_CODE_STRUCT = struct.Struct("<feehh")  # step, mean, scale, lo, hi -> 12 bytes per tensor


@dataclass(frozen=True)
class TensorCode:
    """How one tensor is quantised and entropy-coded.

    Attributes:
        step: quantisation step; value = symbol * step.
        mean: Laplace mean, in symbol units.
        scale: Laplace scale ``b``, in symbol units (> 0).
        lo: smallest symbol (inclusive).
        hi: largest symbol (inclusive).
    """

    step: float
    mean: float
    scale: float
    lo: int
    hi: int

    def canonical(self) -> "TensorCode":
        """Round every value through its serialised type (float32 / float16 / int16)."""
        scale = float(min(max(self.scale, 0.02), 60000.0))
        step, mean, scale, lo, hi = _CODE_STRUCT.unpack(
            _CODE_STRUCT.pack(self.step, max(min(self.mean, 60000.0), -60000.0), scale, self.lo, self.hi)
        )
        return TensorCode(step, mean, scale, lo, hi)

    @property
    def bits(self) -> int:
        """Bits of a fixed-length code for this symbol range (what a raw format would spend)."""
        return max(1, int(np.ceil(np.log2(self.hi - self.lo + 1))))

    def validate(self, source: str = "<bytes>") -> None:
        if not (np.isfinite(self.step) and 1e-9 < self.step <= 1e3):
            raise NDFFormatError(f"quantisation step {self.step} is outside (1e-9, 1e3]", source=source)
        if not (np.isfinite(self.mean) and np.isfinite(self.scale) and self.scale > 0):
            raise NDFFormatError(f"entropy model mean={self.mean} scale={self.scale} is invalid", source=source)
        if not (-SYMBOL_BOUND <= self.lo <= self.hi <= SYMBOL_BOUND):
            raise NDFFormatError(f"symbol range [{self.lo}, {self.hi}] is invalid", source=source)


def fit_code(values: np.ndarray, step: float) -> tuple[TensorCode, np.ndarray]:
    """Quantise ``values`` with ``step`` and fit a Laplace model to the symbols.

    Returns:
        The canonical code and the int32 symbols (clipped to the code's range).
    """
    step = float(np.float32(step))
    sym = np.clip(np.rint(np.asarray(values, dtype=np.float64) / step), -SYMBOL_BOUND + 1, SYMBOL_BOUND - 1)
    sym = sym.astype(np.int32)
    if sym.size == 0:
        return TensorCode(step, 0.0, 1.0, 0, 0).canonical(), sym
    mean = float(np.median(sym))
    scale = float(np.mean(np.abs(sym - mean))) + 0.05
    code = TensorCode(step, mean, scale, int(sym.min()), int(sym.max())).canonical()
    return code, sym


def pack_codes(codes: Sequence[TensorCode]) -> bytes:
    """Serialise a list of codes (12 bytes each)."""
    return b"".join(_CODE_STRUCT.pack(c.step, c.mean, c.scale, c.lo, c.hi) for c in codes)


def unpack_codes(data: bytes, count: int, source: str = "<bytes>", offset: int = 0) -> tuple[list[TensorCode], int]:
    """Read ``count`` codes from the start of ``data``; returns them and the bytes consumed."""
    need = count * _CODE_STRUCT.size
    if len(data) < need:
        raise NDFFormatError(f"payload too short for {count} tensor codes", source=source, offset=offset)
    codes = []
    for i in range(count):
        code = TensorCode(*_CODE_STRUCT.unpack_from(data, i * _CODE_STRUCT.size))
        code.validate(source)
        codes.append(code)
    return codes, need


@functools.lru_cache(maxsize=1024)
def _model(code: TensorCode):
    import constriction

    return constriction.stream.model.QuantizedLaplace(code.lo, code.hi, code.mean, code.scale)


@functools.lru_cache(maxsize=64)
def _open_model(lo: int, hi: int):
    """A quantised Laplace on ``[lo, hi]`` whose mean/scale come per symbol."""
    import constriction

    return constriction.stream.model.QuantizedLaplace(lo, hi)


#: Runs of at most this many symbols keep their per-symbol parameter arrays cached (16 bytes
#: per symbol): a dataset's records share a few small runs. Larger runs are rebuilt per call,
#: so a stream of hostile files declaring big, all-different runs can not pin gigabytes.
_CACHED_RUN_SYMBOLS = 1 << 16


def _build_run_params(items: tuple[tuple[int, TensorCode], ...]) -> tuple[np.ndarray, np.ndarray]:
    means = np.concatenate([np.full(n, c.mean, dtype=np.float64) for n, c in items])
    scales = np.concatenate([np.full(n, c.scale, dtype=np.float64) for n, c in items])
    return means, scales


_cached_run_params = functools.lru_cache(maxsize=256)(_build_run_params)


def _run_params(items: tuple[tuple[int, TensorCode], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-symbol means and scales of a run (cached for small runs only)."""
    if sum(n for n, _ in items) <= _CACHED_RUN_SYMBOLS:
        return _cached_run_params(items)
    return _build_run_params(items)


def _runs(specs: Sequence[tuple[int, TensorCode]]) -> list[list[int]]:
    """Indices of the coded tensors, grouped into runs of equal symbol range.

    A range coder's output depends only on the sequence of (symbol, distribution) pairs, so a
    run can be coded in one call with per-symbol parameters: the same bits as one call per
    tensor, with far fewer Python calls (records of a base share one range).
    """
    runs: list[list[int]] = []
    last = None
    for i, (n, code) in enumerate(specs):
        if code.lo == code.hi or n == 0:
            continue  # a constant tensor costs no bits
        if runs and last == (code.lo, code.hi):
            runs[-1].append(i)
        else:
            runs.append([i])
            last = (code.lo, code.hi)
    return runs


def _coder_args(specs: Sequence[tuple[int, TensorCode]], run: list[int]) -> tuple:
    if len(run) == 1:
        return (_model(specs[run[0]][1]),)
    code = specs[run[0]][1]
    means, scales = _run_params(tuple((int(specs[i][0]), specs[i][1]) for i in run))
    return (_open_model(code.lo, code.hi), means, scales)


def encode_symbols(streams: Sequence[tuple[np.ndarray, TensorCode]]) -> bytes:
    """Range-code several symbol arrays, each under its own code, into one byte string."""
    import constriction

    flats = [np.ascontiguousarray(sym, dtype=np.int32).ravel() for sym, _ in streams]
    specs = [(f.size, code) for f, (_, code) in zip(flats, streams)]
    for f, (_, code) in zip(flats, streams):
        if code.lo != code.hi and f.size and (f.min() < code.lo or f.max() > code.hi):
            raise ValueError("symbols fall outside their code's range")
    encoder = constriction.stream.queue.RangeEncoder()
    for run in _runs(specs):
        symbols = flats[run[0]] if len(run) == 1 else np.concatenate([flats[i] for i in run])
        encoder.encode(symbols, *_coder_args(specs, run))
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_symbols(
    data: bytes, specs: Sequence[tuple[int, TensorCode]], source: str = "<bytes>", offset: int = 0
) -> list[np.ndarray]:
    """Decode what :func:`encode_symbols` wrote, given each array's length and code.

    Raises:
        NDFLimitError: the arrays would hold more than ``LIMITS['max_symbols']`` values.
        NDFFormatError: the coded stream is malformed.
    """
    import constriction

    total = sum(int(n) for n, _ in specs)
    if total > LIMITS["max_symbols"]:
        raise NDFLimitError(f"{total} quantised values exceed max_symbols={LIMITS['max_symbols']}", source=source)
    if len(data) % 4:
        raise NDFFormatError(f"coded stream of {len(data)} bytes is not a whole number of 32-bit words", source=source, offset=offset)
    out: list[np.ndarray | None] = [None] * len(specs)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        for run in _runs(specs):
            count = sum(int(specs[i][0]) for i in run)
            args = _coder_args(specs, run)
            decoded = decoder.decode(args[0], count) if len(args) == 1 else decoder.decode(*args)
            symbols = np.asarray(decoded, dtype=np.int32)
            for i, part in zip(run, np.split(symbols, np.cumsum([int(specs[i][0]) for i in run])[:-1])):
                out[i] = part
    except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:  # constriction raises AssertionError on invalid data
        raise NDFFormatError(f"entropy-coded payload is malformed: {exc}", source=source, offset=offset) from None
    # tensors that cost no bits (constant, or empty) hold their single symbol
    return [np.full(int(n), code.lo, dtype=np.int32) if o is None else o for o, (n, code) in zip(out, specs)]
