"""The pieces of the ``.ndf`` fuzzer: seed files, mutators and the target.

Shared by the long run (``python -m benchmarks.fuzz``, coverage-guided with atheris or a
plain mutation loop) and the CI-sized run in ``tests/test_fuzz.py``.

* :func:`make_seeds` encodes a handful of tiny, *valid* files of every kind the reader
  accepts: standalone fields (gray, RGB, RGBA, with label and metadata), records of a
  ``grid-mlp`` and of a ``conv-field`` shared base, compact records of a ``hyper-field`` and
  a ``pixel-context`` base (one with an explicit size), and the four base files themselves.
* :class:`Mutator` turns a seed into a hostile input: byte flips / sets / inserts /
  deletes / truncations / splices, plus structure-aware mutations that set one *declared*
  header value (a fixed-header field, a section length, a config value, a label, one field
  of a tensor code) to a boundary or random value, and usually re-seal the CRC-32 so the
  input gets past the checksum into the deeper parsers, as a deliberate attacker would.
* :func:`target` is what every input goes through: ``parse``, ``inspect``, ``load_base``
  (kind 3), ``read_field`` (records get their base by hash) and ``render_fields`` at two
  small output sizes (and the original size when it is small). Only :class:`NDFError`
  subclasses may escape it; anything else is a finding. A rendered image must be finite and
  in [0, 1].
"""

from __future__ import annotations

import contextlib
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import ndf_datasets as ndf
from ndf_datasets.codec import format as fmt
from ndf_datasets.codec.coding import _CODE_STRUCT
from ndf_datasets.codec.decoding import read_field, render_fields
from ndf_datasets.codec.errors import NDFBaseError, NDFError
from ndf_datasets.codec.record import RECORD_TAG, is_compact
from ndf_datasets.codec.shared import SharedBase, load_base

__all__ = [
    "CORPUS",
    "FUZZ_LIMITS",
    "FuzzFinding",
    "Mutator",
    "OUTPUT_SIZES",
    "Seeds",
    "fuzz_limits",
    "load_corpus",
    "make_seeds",
    "reseal",
    "target",
    "write_seeds",
]

#: The committed corpus: ``seeds/`` (valid files, bases included) and ``regressions/``
#: (inputs that once crashed or hung the reader; they must keep ending in an NDFError).
CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fuzz_corpus"

#: Output sizes every accepted input is rendered at (what a data loader asks for).
OUTPUT_SIZES: tuple[tuple[int, int], ...] = ((7, 9), (8, 8))
#: Also render at the original size when it has at most this many pixels.
ORIGINAL_SIZE_MAX_PIXELS = 256

#: LIMITS while fuzzing: a data-loader profile (images up to 1 Mi pixels / 1 Mi symbols).
#: The per-input rules (1 s, memory) are checked under it; the cost of a hostile file at the
#: *default* limits is measured separately (``benchmarks/limits_cost.py``, RELIABILITY.md).
FUZZ_LIMITS: dict[str, int] = {
    "max_pixels": 1 << 20,
    "max_symbols": 1 << 20,
    "max_render_values": 1 << 24,
}


class FuzzFinding(AssertionError):
    """The target misbehaved on an input: a non-NDFError exception or a bad rendered image."""


@dataclass
class Seeds:
    """Valid seed files and the shared bases their records need."""

    files: dict[str, bytes]
    bases: dict[bytes, SharedBase]

    def resolver(self) -> Callable[[bytes], SharedBase | list[SharedBase]]:
        """``read_field``'s base lookup: known hash -> base, a compact record's tag -> the candidate
        bases, else :class:`NDFBaseError`."""
        bases = self.bases

        def resolve(base_hash: bytes) -> SharedBase | list[SharedBase]:
            if len(base_hash) < 8:  # a compact record's base tag (version 3: none): the candidates
                found = [b for h, b in bases.items() if h.startswith(base_hash)]
                if found:
                    return found
            try:
                return bases[base_hash]
            except KeyError:
                raise NDFBaseError(f"no base {base_hash.hex()} in the fuzz seeds", source="<fuzz>") from None

        return resolve


def _image(h: int, w: int, c: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [0.5 + 0.4 * np.sin(6.0 * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy) + k) for k in range(c)]
    return (np.clip(np.stack(chans, -1), 0, 1) * 255).round().astype(np.uint8)


def make_seeds(seed: int = 0) -> Seeds:
    """Encode the seed corpus (a few seconds on one CPU core; deterministic for ``seed``)."""
    torch.manual_seed(seed)
    files: dict[str, bytes] = {}
    files["field_gray"] = ndf.encode(_image(6, 5, 1, 1)[..., 0], psnr=None, steps=20, seed=seed)
    files["field_rgb_label_meta"] = ndf.encode(
        _image(8, 8, 3, 2), psnr=None, steps=20, seed=seed, label=-3, metadata={"k": [1, "x"]}
    )
    files["field_rgba"] = ndf.encode(_image(4, 7, 4, 3), psnr=None, steps=20, seed=seed)
    files["field_bicubic_2cpl"] = ndf.encode(
        _image(9, 6, 3, 4), psnr=None, steps=20, seed=seed, config=(2, 2, 1, 8, 1, 1)
    )
    train = np.stack([_image(8, 8, 3, 10 + i) for i in range(8)])
    grid_base = ndf.fit_base(train, epochs=2, batch_size=8, progress=False, seed=seed)
    conv_base = ndf.fit_base(
        train, config=(2, 1, 4, 4, 4, 4), arch="conv-field", epochs=2, batch_size=8, progress=False, seed=seed
    )
    files["base_grid"] = grid_base.to_bytes()
    files["base_conv"] = conv_base.to_bytes()
    files["record_grid"] = ndf.encode(train[0], base=grid_base, psnr=None, steps=10, seed=seed, label=7)
    files["record_conv"] = ndf.encode(train[1], base=conv_base, psnr=None, steps=10, seed=seed)
    hyper_base, pixel_base = learned_seed_bases(seed)
    files["base_hyper"] = hyper_base.to_bytes()
    files["base_pixel"] = pixel_base.to_bytes()
    files["record_hyper"] = ndf.encode(_image(8, 8, 3, 20), base=hyper_base, level=2, label=4)
    files["record_hyper_13x11"] = ndf.encode(_image(13, 11, 3, 21), base=hyper_base, level=1)
    files["record_pixel"] = ndf.encode(_image(8, 8, 1, 22)[..., 0], base=pixel_base, level=9, label=1)
    cb_base = learned_seed_bases(seed, cb=1)[0]
    files["base_hyper_cb"] = cb_base.to_bytes()
    files["record_hyper_cb"] = ndf.encode(_image(8, 8, 3, 23), base=cb_base, level=2, label=5)
    four_base = learned_seed_bases(seed, cb=2)[0]
    files["base_hyper_4p"] = four_base.to_bytes()
    files["record_hyper_4p"] = ndf.encode(_image(8, 8, 3, 24), base=four_base, level=2, label=6)
    bases = {b.hash: b for b in (grid_base, conv_base, hyper_base, pixel_base, cb_base, four_base)}
    return Seeds(files, bases)


def learned_seed_bases(seed: int = 0, cb: int = 0) -> tuple[SharedBase, SharedBase]:
    """Tiny ``hyper-field`` (with the spatial context ``cb``: 1 the checkerboard, 2 four passes)
    and ``pixel-context`` bases (a few training steps; 8 x 8 images)."""
    from ndf_datasets.codec.training import TrainSettings, train_base

    torch.manual_seed(seed)
    rgb = torch.from_numpy(np.stack([_image(8, 8, 3, 30 + i) for i in range(8)]).transpose(0, 3, 1, 2).copy())
    gray = rgb[:, :1]
    config = (8, 8, 4, 8, 8, 8, 1, 2, 4, 8, 2, 4, 1, 1, 4) + ((cb,) if cb else ())
    hyper = train_base(rgb, TrainSettings(arch="hyper-field", config=config,
                                          steps=3, batch_size=4, seed=seed), progress=False)
    pixel = train_base(gray, TrainSettings(arch="pixel-context", config=(4, 2), steps=3, batch_size=4, seed=seed, flips=False),
                       progress=False)
    return load_base(hyper.to_bytes()), load_base(pixel.to_bytes())


def write_seeds(seeds: Seeds, directory: Path = CORPUS / "seeds") -> None:
    """Store the seed corpus (``<name>.ndf``; bases as ``<name>.ndfbase``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, blob in seeds.files.items():
        (directory / (name + (".ndfbase" if name.startswith("base") else ".ndf"))).write_bytes(blob)


def load_corpus(directory: Path = CORPUS / "seeds") -> Seeds:
    """Read a seed corpus written by :func:`write_seeds`; every ``.ndfbase`` becomes a known base."""
    files = {p.stem: p.read_bytes() for p in sorted(directory.iterdir()) if p.suffix in (".ndf", ".ndfbase")}
    bases = {}
    for name, blob in files.items():
        if name.startswith("base"):
            base = load_base(blob, name)
            bases[base.hash] = base
    if not files:
        raise FileNotFoundError(f"no seed files in {directory}; run python -m benchmarks.fuzz --make-seeds")
    return Seeds(files, bases)


@contextlib.contextmanager
def fuzz_limits(overrides: dict[str, int] | None = None) -> Iterator[dict[str, int]]:
    """Temporarily apply :data:`FUZZ_LIMITS` (or ``overrides``) to ``ndf_datasets.codec.format.LIMITS``."""
    saved = dict(fmt.LIMITS)
    fmt.LIMITS.update(FUZZ_LIMITS if overrides is None else overrides)
    try:
        yield dict(fmt.LIMITS)
    finally:
        fmt.LIMITS.clear()
        fmt.LIMITS.update(saved)


# ----------------------------------------------------------------------------- the target


def _render_ok(x: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise FuzzFinding("a decode returned non-finite or out-of-range pixels without an NDFError")


def target(data: bytes, resolve: Callable[[bytes], SharedBase]) -> str:
    """Run one input through every read path.

    Returns:
        ``"ok:<kind>"`` for a file accepted and rendered, else the :class:`NDFError` class name.

    Raises:
        FuzzFinding: a decode produced bad pixels.
        Exception: anything that is not an :class:`NDFError` (the caller reports it).
    """
    try:
        if is_compact(data):
            ndf.inspect(data, "<fuzz>")
            field = read_field(data, resolve, "<fuzz>")
            for size in OUTPUT_SIZES:
                _render_ok(render_fields([field], size))
            if field.arch.height * field.arch.width <= ORIGINAL_SIZE_MAX_PIXELS:
                _render_ok(render_fields([field, field], None))
            return "ok:record"
        c = fmt.parse(data, "<fuzz>")
        fmt.pretty(c)
        if c.kind == fmt.KIND_BASE:
            load_base(data, "<fuzz>")
            return "ok:base"
        ndf.inspect(data, "<fuzz>")
        field = read_field(data, resolve, "<fuzz>")
        for size in OUTPUT_SIZES:
            _render_ok(render_fields([field], size))
        if c.height * c.width <= ORIGINAL_SIZE_MAX_PIXELS:
            _render_ok(render_fields([field, field], None))
        return f"ok:{fmt.KIND_NAMES[c.kind]}"
    except NDFError as exc:
        return type(exc).__name__


# ----------------------------------------------------------------------------- mutations


def reseal(body: bytes, base_hash: bytes | None = None) -> bytes:
    """Append a valid CRC-32 to ``body`` (the file without its last 4 bytes); compact records
    (``base_hash`` given) chain it after the base's hash, as readers check it."""
    start = 0 if base_hash is None else zlib.crc32(base_hash)
    return body + struct.pack("<I", zlib.crc32(body, start))


def _layout(data: bytes) -> dict[str, int] | None:
    """Offsets of a well-formed-enough file's sections (None when the header is unreadable)."""
    if len(data) < fmt.HEADER_BYTES + 3 + fmt.CRC_BYTES:
        return None
    out = {}
    pos = fmt.HEADER_BYTES
    try:
        for name in ("config", "metadata", "payload"):
            out[name + "_len_at"] = pos
            out[name + "_len"], pos = fmt._read_uvarint(data, pos, "<m>", name)
    except NDFError:
        return None
    if data[4] == fmt.KIND_RECORD:
        out["hash_at"] = pos
        pos += fmt.BASE_HASH_BYTES
    if data[6] & fmt.FLAG_LABEL:
        out["label_at"] = pos
        try:
            _, pos = fmt._read_uvarint(data, pos, "<m>", "label")
        except NDFError:
            return None
    out["config_at"] = pos
    out["payload_at"] = pos + out["config_len"] + out["metadata_len"]
    return out


_INTERESTING_U16 = (0, 1, 2, 3, 255, 256, 4095, 4096, 8191, 8192, 16383, 16384, 16385, 32767, 32768, 65535)
_INTERESTING_INT = (-(2**31), -129, -1, 0, 1, 2, 3, 4, 7, 8, 12, 13, 16, 17, 64, 127, 128, 255, 256, 2**15, 2**31 - 1, 2**40)
_INTERESTING_F = (0.0, -0.0, 1e-12, 1e-9, 1e-3, 1.0, 1e3, 1e4, 65504.0, -65504.0, float("inf"), float("-inf"), float("nan"))


class Mutator:
    """Random and structure-aware mutations of NDF files (deterministic for a ``random.Random``).

    ``base_hashes``: the hashes of the seed bases, so compact records (whose CRC chains the
    base hash) can be re-sealed for their base: the one the seed's CRC checks with (version 3
    records do not name it), else the one their tag names.
    """

    def __init__(self, seeds: list[bytes], rng: random.Random, base_hashes: list[bytes] | None = None):
        self.seeds = seeds
        self.rng = rng
        self.base_hashes = list(base_hashes or [])

    def _base_of(self, record: bytes) -> bytes | None:
        """The seed base a compact record checks with (its CRC; else its version-1/2 tag)."""
        if len(record) > 4:
            crc = struct.unpack("<I", record[-4:])[0]
            for h in self.base_hashes:
                if zlib.crc32(record[:-4], zlib.crc32(h)) == crc:
                    return h
        return self._tagged_base(record)

    def _tagged_base(self, record: bytes) -> bytes | None:
        """The seed base a version-1/2 compact record's tag names (version 3 names none)."""
        if len(record) > 1 and record[0] != RECORD_TAG:
            return next((h for h in self.base_hashes if h[0] == record[1]), None)
        return None

    def _seal(self, body: bytes, base_hash: bytes | None = None) -> bytes:
        if is_compact(body) and len(body) > 1:
            base_hash = base_hash or self._tagged_base(body)
            return reseal(body, base_hash or (self.rng.choice(self.base_hashes) if self.base_hashes else None))
        return reseal(body)

    def _compact(self, data: bytes) -> bytes:
        """Set one declared value of a compact record (level/flags, label, size) and re-seal."""
        rng = self.rng
        base_hash = self._base_of(data)
        b = bytearray(data[:-4])
        f = 1 if b[:1] == bytes([RECORD_TAG]) else 2  # the level byte (versions 1-2: after the base tag)
        if len(b) < f + 1:
            return self._seal(bytes(b), base_hash)
        op = rng.randrange(4)
        if op == 0:
            b[f] = rng.choice((0, 0x3F, 0x40, 0x80, 0xC0, 0xFF, rng.randrange(256)))
        elif op == 1:
            b[f] |= 0x80
            sizes = _INTERESTING_U16 + (rng.randrange(1 << 20),)
            b[f + 1 : f + 1] = fmt._uvarint(rng.choice(sizes)) + fmt._uvarint(rng.choice(sizes))
        elif op == 2:
            b[f] |= 0x40
            b[f + 1 : f + 1] = fmt._uvarint(fmt._zigzag(rng.choice(_INTERESTING_INT)) & ((1 << 63) - 1))
        else:
            b[0] = rng.choice((0xC0, 0xC1, 0xC2, 0xC3, 0xCF))
            if f == 2 and rng.random() < 0.2:
                b[1] = rng.randrange(256)
        return self._seal(bytes(b), base_hash)

    # ---- byte level

    def _bytes(self, data: bytes) -> bytes:
        rng = self.rng
        b = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
            op = rng.randrange(7)
            if not b:
                b = bytearray(rng.randbytes(rng.randrange(1, 64)))
                continue
            i = rng.randrange(len(b))
            if op == 0:
                b[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                b[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            elif op == 2:
                b[i:i] = rng.randbytes(rng.choice((1, 2, 4, 12)))
            elif op == 3:
                del b[i : i + rng.choice((1, 2, 4, 12))]
            elif op == 4:
                b = b[: rng.randrange(len(b) + 1)]
            elif op == 5:
                other = rng.choice(self.seeds)
                j = rng.randrange(len(other))
                b[i:] = other[j : j + rng.randrange(1, len(other) + 1)]
            else:
                b[i] = (b[i] + rng.choice((-1, 1, 16, -16))) & 0xFF
        return bytes(b)

    # ---- structure aware

    def _header_field(self, b: bytearray) -> None:
        rng = self.rng
        fields = fmt.HEADER[1:]
        f = rng.choice(fields)
        offset = fmt.HEADER_BYTES - sum(struct.calcsize("<" + g.fmt) for g in fmt.HEADER[fmt.HEADER.index(f) :])
        if f.fmt == "B":
            b[offset] = rng.choice((f.lo, f.hi, f.lo - 1 & 0xFF, f.hi + 1 & 0xFF, rng.randrange(256)))
        else:
            value = rng.choice(_INTERESTING_U16 + (rng.randrange(65536),))
            struct.pack_into("<H", b, offset, value)
        if rng.random() < 0.3:  # a large image with a matching other side
            struct.pack_into("<HH", b, 8, rng.choice(_INTERESTING_U16), rng.choice(_INTERESTING_U16))

    def _varint_at(self, b: bytearray, at: int, signed: bool) -> None:
        rng = self.rng
        try:
            _, end = fmt._read_uvarint(bytes(b), at, "<m>", "v")
        except NDFError:
            return
        value = rng.choice(_INTERESTING_INT + (rng.randrange(1 << rng.randrange(1, 40)),))
        if signed:
            value = fmt._zigzag(value)
        b[at:end] = fmt._uvarint(abs(value))

    def _config(self, b: bytearray, lay: dict[str, int]) -> None:
        rng = self.rng
        start, n = lay["config_at"], lay["config_len"]
        try:
            values = list(fmt.decode_varints(bytes(b[start : start + n])))
        except NDFError:
            return
        op = rng.randrange(3)
        if op == 0 and values:
            values[rng.randrange(len(values))] = rng.choice(_INTERESTING_INT)
        elif op == 1:
            values.append(rng.choice(_INTERESTING_INT))
        elif values:
            values.pop(rng.randrange(len(values)))
        try:
            new = fmt.encode_varints(values)
        except ValueError:
            return
        b[start : start + n] = new
        b[lay["config_len_at"] : lay["config_len_at"] + _varint_len(b, lay["config_len_at"])] = fmt._uvarint(len(new))

    def _code(self, b: bytearray, lay: dict[str, int]) -> None:
        rng = self.rng
        payload_at, size = lay["payload_at"], _CODE_STRUCT.size
        n_codes = max(1, min(64, lay["payload_len"] // size))
        at = payload_at + size * rng.randrange(n_codes)
        if at + size > len(b) - fmt.CRC_BYTES:
            return
        step, mean, scale, lo, hi = _CODE_STRUCT.unpack_from(b, at)
        which = rng.randrange(5)
        if which < 3:
            vals = [step, mean, scale]
            vals[which] = rng.choice(_INTERESTING_F)
            step, mean, scale = vals
        elif which == 3:
            lo = rng.choice((-(2**15), -(2**15) + 1, -1, 0, 1, hi, hi + 1 if hi < 2**15 - 1 else hi))
        else:
            hi = rng.choice((2**15 - 1, 0, 1, lo, lo - 1 if lo > -(2**15) else lo))
        try:
            struct.pack_into("<f", b, at, step)
            packed = struct.pack("<ee", mean, scale)
        except (OverflowError, struct.error):
            packed = b"\xff\x7f\xff\x7f"  # two NaNs
        b[at + 4 : at + 8] = packed
        struct.pack_into("<hh", b, at + 8, lo, hi)

    def _structured(self, data: bytes) -> bytes:
        rng = self.rng
        body = bytearray(data[:-4]) if len(data) > 4 else bytearray(data)
        lay = _layout(data)
        op = rng.randrange(6)
        if op == 0 or lay is None:
            if len(body) >= fmt.HEADER_BYTES:
                self._header_field(body)
        elif op == 1:
            name = rng.choice(("config", "metadata", "payload"))
            self._varint_at(body, lay[name + "_len_at"], signed=False)
        elif op == 2:
            self._config(body, lay)
        elif op == 3 and "label_at" in lay:
            self._varint_at(body, lay["label_at"], signed=True)
        elif op == 4:
            self._code(body, lay)
        else:  # a metadata section of hostile JSON
            meta = rng.choice((b"[" * 5000, b'{"a":' * 3000, b"NaN", b'{"a":1e999}', b'"\xff"', b"{}", b'{"a":[]}'))
            start = lay["config_at"] + lay["config_len"]
            body[start : start + lay["metadata_len"]] = meta
            at = lay["metadata_len_at"]
            body[at : at + _varint_len(body, at)] = fmt._uvarint(len(meta))
        return reseal(bytes(body))

    def mutate(self, data: bytes | None = None) -> bytes:
        """One hostile input from ``data`` (default: a random seed)."""
        rng = self.rng
        data = rng.choice(self.seeds) if data is None else data
        r = rng.random()
        if r < 0.45:
            return self._compact(data) if is_compact(data) else self._structured(data)
        out = self._bytes(data)
        if r < 0.8 and len(out) > 4:
            out = self._seal(out[:-4], self._base_of(data) if is_compact(data) else None)
        return out


def _varint_len(b: bytearray | bytes, at: int) -> int:
    n = 0
    while at + n < len(b) and b[at + n] & 0x80:
        n += 1
    return n + 1
