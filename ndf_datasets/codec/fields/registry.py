"""The registry of field architectures: each registered by name under a stable numeric id.

Every architecture follows one contract (:class:`FieldArch`): it is built from the integer
``config`` stored in the file plus the image geometry, lists the tensors it needs
(:meth:`FieldArch.tensor_specs`), and renders a *batch of different images* in one forward
pass (:meth:`FieldArch.render`). The decoder builds an empty architecture from the header and
fills it from the payload; it never imports the fitting code.

The id written into the header comes from :func:`register_arch`, never from registration
order, so adding an architecture can not change how existing files decode. The built-in
architectures register themselves when :mod:`ndf_datasets.codec.fields` imports them.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from .base import FieldArch

__all__ = ["register_arch", "get_arch", "ARCHS"]

#: Registered architectures by stable id.
ARCHS: dict[int, type[FieldArch]] = {}

T = TypeVar("T", bound=type[FieldArch])


def register_arch(arch_id: int, name: str) -> Callable[[T], T]:
    """Class decorator: register a :class:`FieldArch` under a stable id and name."""

    def wrap(cls: T) -> T:
        if arch_id in ARCHS and ARCHS[arch_id] is not cls:
            raise ValueError(f"architecture id {arch_id} is already taken by {ARCHS[arch_id].name}")
        if not 1 <= arch_id <= 255:
            raise ValueError("architecture ids are 1..255")
        cls.arch_id = arch_id
        cls.name = name
        ARCHS[arch_id] = cls
        return cls

    return wrap


def get_arch(arch_id: int) -> type[FieldArch]:
    """The architecture class registered under ``arch_id``.

    Raises:
        KeyError: no such architecture (callers turn this into :class:`NDFVersionError`).
    """
    return ARCHS[arch_id]

