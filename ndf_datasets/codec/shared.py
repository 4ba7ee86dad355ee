"""The shared base: one network and quantisation table per dataset, referenced by hash.

A base is stored in the same container as every NDF file (kind ``base``). Records encoded
with it hold only latent symbols plus the first 8 bytes of the SHA-256 of the base file, so
a record can never be decoded with the wrong base by accident.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import format as fmt
from .coding import TensorCode, decode_symbols, encode_symbols, fit_code, pack_codes, unpack_codes
from .errors import NDFBaseError, NDFFormatError, NDFVersionError
from .fields import FieldArch, get_arch
from .io import write_atomic

__all__ = ["SharedBase", "load_base", "build_arch"]


def build_arch(arch_id: int, config: tuple[int, ...], height: int, width: int, channels: int, source: str) -> FieldArch:
    """Instantiate a registered architecture from header values, with file-naming errors."""
    try:
        cls = get_arch(arch_id)
    except KeyError:
        raise NDFVersionError(f"unknown architecture id {arch_id}; upgrade ndf-datasets", source=source, offset=5) from None
    try:
        return cls(config, height, width, channels)
    except ValueError as exc:
        raise NDFFormatError(str(exc), source=source) from None


@dataclass
class SharedBase:
    """A dataset's shared network (weights) and the quantisation table of its latents.

    Attributes:
        arch: the architecture, built for the dataset's image size.
        weights: dequantised weight tensors (exactly what decoders use).
        latent_codes: one :class:`TensorCode` per latent tensor, in spec order.
        metadata: free-form JSON-able facts (training set, steps, PSNR, ...).
    """

    arch: FieldArch
    weights: dict[str, torch.Tensor]
    latent_codes: list[TensorCode]
    metadata: dict[str, Any] = field(default_factory=dict)
    weight_codes: list[TensorCode] = field(default_factory=list, repr=False)
    weight_symbols: list[np.ndarray] = field(default_factory=list, repr=False)
    _bytes: bytes | None = field(default=None, repr=False)
    _hash: bytes | None = field(default=None, repr=False)
    _device_cache: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    # --------------------------------------------------------------- serialisation

    @classmethod
    def from_float_weights(
        cls,
        arch: FieldArch,
        weights: dict[str, torch.Tensor],
        latent_codes: list[TensorCode],
        weight_step: float = 2.0**-12,
        metadata: dict[str, Any] | None = None,
    ) -> "SharedBase":
        """Quantise float weights (step ``weight_step``) and build the base decoders will see."""
        codes, q = [], {}
        for spec in arch.weight_specs():
            step = weight_step if spec.step is None else spec.step
            code, sym = fit_code(weights[spec.name].detach().cpu().numpy(), step)
            codes.append(code)
            q[spec.name] = torch.from_numpy(sym.astype(np.float32) * np.float32(code.step)).reshape(spec.shape)
        symbols = [np.rint(q[s.name].numpy().ravel() / c.step).astype(np.int32) for s, c in zip(arch.weight_specs(), codes)]
        return cls(arch, q, [c.canonical() for c in latent_codes], dict(metadata or {}), codes, symbols)

    def to_bytes(self) -> bytes:
        """The base file's bytes (what :meth:`save` writes and :attr:`hash` digests)."""
        if self._bytes is None:
            codes = self.weight_codes
            payload = pack_codes(codes + self.latent_codes) + encode_symbols(list(zip(self.weight_symbols, codes)))
            container = fmt.Container(
                kind=fmt.KIND_BASE,
                arch=self.arch.arch_id,
                colorspace={1: 0, 3: 1, 4: 2}[self.arch.channels],
                height=self.arch.height,
                width=self.arch.width,
                config=self.arch.config,
                payload=payload,
                fit_psnr=self.metadata.get("train_psnr"),
                metadata=self.metadata,
            )
            self._bytes = fmt.write(container)
        return self._bytes

    @property
    def hash(self) -> bytes:
        """First 8 bytes of the SHA-256 of :meth:`to_bytes`; records store it (computed once)."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.to_bytes()).digest()[: fmt.BASE_HASH_BYTES]
        return self._hash

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the base to ``path`` atomically (temp file + rename).

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        write_atomic(path, self.to_bytes())
        return path

    # --------------------------------------------------------------- use

    def weights_on(self, device: str | torch.device) -> dict[str, torch.Tensor]:
        """The weights on ``device``, moved once and cached."""
        key = str(torch.device(device))
        if key not in self._device_cache:
            self._device_cache[key] = {k: v.to(device) for k, v in self.weights.items()}
        return self._device_cache[key]

    def arch_for(self, height: int, width: int) -> FieldArch:
        """The base's architecture built for an image of ``height x width``."""
        if (height, width) == (self.arch.height, self.arch.width):
            return self.arch
        return type(self.arch)(self.arch.config, height, width, self.arch.channels)

    def check(self, base_hash: bytes | None, source: str) -> None:
        """Raise :class:`NDFBaseError` unless ``base_hash`` names this base."""
        if base_hash != self.hash:
            raise NDFBaseError(
                f"record was encoded with base {base_hash.hex() if base_hash else None}, "
                f"but the given base is {self.hash.hex()}",
                source=source,
            )

    def __repr__(self) -> str:
        return f"SharedBase(hash={self.hash.hex()}, arch={self.arch!r}, bytes={len(self.to_bytes())})"


def load_base(src: str | os.PathLike | bytes, source: str | None = None) -> SharedBase:
    """Load a shared base from a path or from bytes. Nothing in the file is executed.

    Args:
        src: a local path, or the base file's bytes.
        source: name for error messages (default: the path, or ``<bytes>``).

    Raises:
        NDFError: the file is not a valid base (subclass says why).
        FileNotFoundError: no such file.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, source = bytes(src), source or "<bytes>"
    else:
        source = source or os.fspath(src)
        with open(src, "rb") as f:
            data = f.read(fmt.LIMITS["max_file_bytes"] + 1)
    c = fmt.parse(data, source)
    if c.kind != fmt.KIND_BASE:
        raise NDFFormatError(f"expected a shared base (kind 3), found a {fmt.KIND_NAMES[c.kind]}", source=source)
    arch = build_arch(c.arch, c.config, c.height, c.width, c.channels, source)
    wspecs, lspecs = arch.weight_specs(), arch.latent_specs()
    codes, used = unpack_codes(c.payload, len(wspecs) + len(lspecs), source)
    symbols = decode_symbols(c.payload[used:], [(s.numel, code) for s, code in zip(wspecs, codes)], source)
    weights = {
        s.name: torch.from_numpy(sym.astype(np.float32) * np.float32(code.step)).reshape(s.shape)
        for s, code, sym in zip(wspecs, codes, symbols)
    }
    return SharedBase(arch, weights, codes[len(wspecs) :], c.metadata, codes[: len(wspecs)], symbols, _bytes=data)
