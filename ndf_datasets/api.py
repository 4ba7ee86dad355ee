"""The front door: the functions and classes ``import ndf_datasets as ndf`` offers.

Encoding, decoding and shared bases come from the codec (:mod:`ndf_datasets.codec`), the
conversion of whole datasets from :mod:`ndf_datasets.data`; the package re-exports
everything listed here.
"""

from __future__ import annotations

from typing import Any

from .codec import (
    LIMITS,
    DecodedField,
    SharedBase,
    base_filename,
    cached_base,
    clear_base_cache,
    decode,
    decode_batch,
    default_base_config,
    default_config,
    encode,
    encode_batch,
    errors,
    fit_base,
    inspect,
    load_base,
    load_base_cached,
    open_url,
    read_field,
    read_fields,
    read_url,
    register_base,
    render_fields,
    resolve_base,
)
from .codec.encoding import WEIGHT_STEPS, default_conv_config  # noqa: F401 (ndf_datasets.api names before the split)
from .codec.errors import *  # noqa: F403 (the NDFError family, listed once in codec/errors.py)
from .data import ConvertResult
from .data import convert as _convert


def convert(src: Any, out: Any, *, engine: str = "local", ray_address: str | None = None,
            ray_concurrency: int | tuple[int, int] | None = None, **kwargs: Any) -> ConvertResult:  # fmt: skip
    """Convert an image dataset to NDF records of one shared base: in this process, over torchrun ranks, or on Ray.

    Example::

        ndf.convert("raw/mnist", "out/mnist", psnr=30, shard_size=10000)
        ndf.convert("raw/cifar-10-batches-py", "out/c10", base="cifar10", engine="ray")   # a local Ray
        ds = datasets.load_dataset("out/mnist", split="train")

    Args:
        src, out, kwargs: what to convert, where, and how: see
            :func:`ndf_datasets.data.convert` (``layout``, ``psnr``, ``shard_size``, ``base`` ...).
        engine: ``"local"`` (one process, or the ranks of ``torchrun``) or ``"ray"`` (Ray Data:
            :func:`ndf_datasets.integrations.ray.convert_ray`; ``pip install 'ndf-datasets[ray]'``).
            Both write the same files, byte for byte.
        ray_address: the Ray cluster (``"auto"``, ``"ray://head:10001"``); ``None`` starts a local one.
        ray_concurrency: encoding actors on Ray: a count or ``(min, max)`` (default: one per CPU).

    Raises:
        ValueError: an unknown engine, or Ray options with the local engine; see
            :func:`ndf_datasets.data.convert` for the rest.
    """
    if engine == "ray":
        from .integrations.ray import convert_ray

        return convert_ray(src, out, address=ray_address, concurrency=ray_concurrency, **kwargs)
    if engine != "local":
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if ray_address is not None or ray_concurrency is not None:
        raise ValueError("ray_address / ray_concurrency need engine='ray'")
    return _convert(src, out, **kwargs)


__all__ = [
    "encode",
    "encode_batch",
    "decode",
    "decode_batch",
    "inspect",
    "fit_base",
    "convert",
    "load_base",
    "load_base_cached",
    "clear_base_cache",
    "open_url",
    "read_url",
    "resolve_base",
    "cached_base",
    "register_base",
    "base_filename",
    "read_field",
    "read_fields",
    "render_fields",
    "DecodedField",
    "SharedBase",
    "default_config",
    "default_base_config",
    "LIMITS",
    *errors.__all__,
]
