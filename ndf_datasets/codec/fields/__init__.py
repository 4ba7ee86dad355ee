"""Neural-field architectures: the :class:`FieldArch` contract, the registry, and the built-in ones.

* :mod:`.base`: :class:`FieldArch` and :class:`TensorSpec`, the contract every architecture follows.
* :mod:`.registry`: :func:`register_arch` / :func:`get_arch`, by a stable numeric id.
* :mod:`.grid` (``grid-mlp``, id 1), :mod:`.conv` (``conv-field``, id 2) and :mod:`.hyper`
  (``hyper-field``, id 3: a learned transform codec, records coded by its own entropy model) and
  :mod:`.pixel` (``pixel-context``, id 4: near-lossless pixels under a learned context model),
  registered on import.

A new architecture is a module here with a ``@register_arch(<new id>, "<name>")`` class,
imported here so that it registers.
"""

from __future__ import annotations

from . import conv, grid, hyper, pixel  # noqa: F401  (registers the built-in architectures)
from .base import FieldArch, TensorSpec
from .registry import ARCHS, T, get_arch, register_arch  # noqa: F401 (T: a name of the old fields package)

__all__ = ["FieldArch", "TensorSpec", "register_arch", "get_arch", "ARCHS"]
