"""The front door: the functions and classes ``import ndf_datasets as ndf`` offers.

Encoding, decoding and shared bases come from the codec (:mod:`ndf_datasets.codec`), the
conversion of whole datasets from :mod:`ndf_datasets.data`; the package re-exports
everything listed here.
"""

from __future__ import annotations

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
    read_url,
    register_base,
    render_fields,
    resolve_base,
)
from .codec.encoding import WEIGHT_STEPS, default_conv_config  # noqa: F401 (ndf_datasets.api names before the split)
from .codec.errors import *  # noqa: F403 (the NDFError family, listed once in codec/errors.py)
from .data import convert

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
    "render_fields",
    "DecodedField",
    "SharedBase",
    "default_config",
    "default_base_config",
    "LIMITS",
    *errors.__all__,
]
