"""The restricted unpickler that reads CIFAR-10 python batches without executing anything.

:class:`RestrictedUnpickler` rebuilds only plain data and uint8/int numpy arrays, through
small functions of this module that check each array's size; every other global is refused,
so a hostile pickle can not run code.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import SourceError

__all__ = ["RestrictedUnpickler", "restricted_loads"]

_ARRAY_DTYPES = {"u1": np.uint8, "i1": np.int8, "u2": np.uint16, "i2": np.int16, "i4": np.int32, "i8": np.int64}


class _NDArrayClass:
    """Stands for ``numpy.ndarray`` inside a restricted pickle (never instantiated)."""


@dataclass
class _DType:
    """A numpy dtype as pickled: ``dtype(code, align, copy)`` then ``__setstate__``."""

    code: str
    byteorder: str = "|"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], (str, bytes)):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")
        order = state[1].decode("ascii") if isinstance(state[1], bytes) else state[1]
        if order not in ("|", "<", ">", "="):
            raise pickle.UnpicklingError(f"unexpected dtype byte order {order!r}")
        self.byteorder = order

    def numpy(self) -> np.dtype:
        base = np.dtype(_ARRAY_DTYPES[self.code])
        if base.itemsize == 1 or self.byteorder == "|":
            return base
        return base.newbyteorder("<" if self.byteorder in ("<", "=") else ">")


def _make_dtype(code: Any, align: Any = 0, copy: Any = 1) -> _DType:
    code = code.decode("ascii", "replace") if isinstance(code, bytes) else code
    if not isinstance(code, str) or code.lstrip("<>|=") not in _ARRAY_DTYPES:
        raise pickle.UnpicklingError(f"array dtype {code!r} is not allowed (only {sorted(_ARRAY_DTYPES)})")
    return _DType(code.lstrip("<>|="))


class _ArrayStub:
    """An array being rebuilt: ``_reconstruct(ndarray, (0,), b'b')`` then ``__setstate__``."""

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("unexpected ndarray state")
        _, shape, dtype, fortran, raw = state
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("ndarray state without an allowed dtype")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and 0 <= d < 1 << 40 for d in shape):
            raise pickle.UnpicklingError(f"invalid ndarray shape {shape!r:.80}")
        if isinstance(raw, str):  # protocol 0/1 pickles of py2 str read with encoding="latin1"
            raw = raw.encode("latin-1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("ndarray data is not a byte string")
        dt = dtype.numpy()
        count = int(np.prod(shape, dtype=np.int64))
        if count * dt.itemsize != len(raw):
            raise pickle.UnpicklingError(
                f"ndarray of shape {shape} and dtype {dt} needs {count * dt.itemsize} bytes, the data has {len(raw)}"
            )
        arr = np.frombuffer(bytes(raw), dt).reshape(shape, order="F" if fortran else "C")
        self.value = np.ascontiguousarray(arr)


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _NDArrayClass:
        raise pickle.UnpicklingError("_reconstruct may only build a numpy.ndarray")
    return _ArrayStub()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """``_codecs.encode(str, 'latin1')``: how Python 3 writes ``bytes`` in a protocol-2 pickle."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 text")
    return text.encode("latin-1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NDArrayClass,
    ("numpy", "dtype"): _make_dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that can only rebuild plain data and uint8/int numpy arrays.

    ``find_class`` maps the few globals a CIFAR batch pickle uses (numpy's ``_reconstruct``,
    ``ndarray`` and ``dtype``, and ``_codecs.encode`` for bytes in Python 3 protocol-2
    pickles) to small functions of this module that rebuild an array from its bytes after
    checking its size; every other global (``os.system``, ``builtins.eval``, any class) is
    refused. Persistent ids are refused by :class:`pickle.Unpickler` itself.

    Args:
        file: a binary file object holding the pickle.
        source: file name for error messages.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """The allowed replacement for ``module.name``.

        Raises:
            pickle.UnpicklingError: any global that is not allowed (names it and the file).
        """
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"{self.source}: refusing to load global {module}.{name}; only numpy uint8/int arrays "
                "and plain data are allowed in a CIFAR-10 batch"
            )
        return found


def _unwrap(obj: Any) -> Any:
    """Replace :class:`_ArrayStub` objects by their arrays, recursively through lists/dicts/tuples."""
    if isinstance(obj, _ArrayStub):
        if obj.value is None:
            raise pickle.UnpicklingError("an ndarray without data")
        return obj.value
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(v) for v in obj)
    if isinstance(obj, (_DType, _NDArrayClass)) or obj is _NDArrayClass:
        raise pickle.UnpicklingError("a bare numpy dtype/class is not data")
    return obj


def restricted_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``encoding="bytes"``).

    Args:
        data: the pickle.
        source: file name for error messages.

    Raises:
        SourceError: the pickle is malformed or uses a global that is not allowed.

    Returns:
        The object, with arrays as numpy arrays.
    """
    try:
        return _unwrap(RestrictedUnpickler(io.BytesIO(data), source).load())
    except SourceError:
        raise
    except pickle.UnpicklingError as exc:
        message = str(exc)
        raise SourceError(message if message.startswith(source) else f"{source}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside the unpickler is a bad file
        raise SourceError(f"{source}: not a valid CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
