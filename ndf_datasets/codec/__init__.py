"""The codec: one image or a batch <-> ``.ndf`` bytes, and back; the one room the file format lives in.

This package is the codec's door: everything outside it (``ndf_datasets.data``, the
integrations, the front door ``ndf_datasets``) uses the names below or a public submodule,
never a private name. The codec imports nothing from ``ndf_datasets.data`` or
``ndf_datasets.integrations`` (``tests/test_layout.py`` checks it).

Its rooms, bottom up:

* :mod:`~ndf_datasets.codec.errors`: the :class:`NDFError` family.
* :mod:`~ndf_datasets.codec.format`: the container (header, fields, CRC) and :data:`LIMITS`.
* :mod:`~ndf_datasets.codec.coding`: quantisation tables and entropy coding of tensors.
* :mod:`~ndf_datasets.codec.fields`: the field architectures, registered by id (add new ones here).
* :mod:`~ndf_datasets.codec.shared`: :class:`SharedBase`, one network per dataset.
* :mod:`~ndf_datasets.codec.io` and :mod:`~ndf_datasets.codec.bases`: bytes from paths and
  URLs; bases cached and found by hash.
* :mod:`~ndf_datasets.codec.decoding`: the one decode path, bytes -> :class:`DecodedField` -> pixels.
* :mod:`~ndf_datasets.codec.fitting`, :mod:`~ndf_datasets.codec.amortised`: fitting fields
  and bases; :mod:`~ndf_datasets.codec.encoding`: ``encode``, ``fit_base``, ``inspect``;
  :mod:`~ndf_datasets.codec.images`: accepted image types.
"""

from .bases import (
    BASE_SUFFIX,
    base_filename,
    cached_base,
    clear_base_cache,
    load_base_cached,
    register_base,
    resolve_base,
)
from .decoding import DecodedField, Size, decode, decode_batch, read_bytes, read_field, render_fields, resolve_size
from .encoding import default_base_config, default_config, encode, encode_batch, fit_base, inspect
from .errors import (
    NDFBaseError,
    NDFChecksumError,
    NDFError,
    NDFFormatError,
    NDFLimitError,
    NDFShardError,
    NDFVersionError,
)
from .format import LIMITS
from .io import TMP_SUFFIX, is_url, open_url, read_url, write_atomic
from .shared import SharedBase, build_arch, load_base

__all__ = [
    "encode",
    "encode_batch",
    "decode",
    "decode_batch",
    "inspect",
    "fit_base",
    "default_config",
    "default_base_config",
    "read_field",
    "render_fields",
    "resolve_size",
    "read_bytes",
    "Size",
    "DecodedField",
    "SharedBase",
    "build_arch",
    "load_base",
    "load_base_cached",
    "clear_base_cache",
    "cached_base",
    "register_base",
    "resolve_base",
    "base_filename",
    "BASE_SUFFIX",
    "open_url",
    "read_url",
    "write_atomic",
    "is_url",
    "TMP_SUFFIX",
    "LIMITS",
    "NDFError",
    "NDFFormatError",
    "NDFChecksumError",
    "NDFVersionError",
    "NDFLimitError",
    "NDFBaseError",
    "NDFShardError",
]
