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
* Learned codecs (``hyper-field``, ``pixel-context``): :mod:`~ndf_datasets.codec.exact`
  (fixed-point entropy parameters), :mod:`~ndf_datasets.codec.gaussian` (their range coder),
  :mod:`~ndf_datasets.codec.record` (compact records), :mod:`~ndf_datasets.codec.learned`
  (rate-controlled encoding), :mod:`~ndf_datasets.codec.refine`, :mod:`~ndf_datasets.codec.training`
  (``ndf train-base``) and :mod:`~ndf_datasets.codec.zoo` (bases shipped in the package).
"""

from . import bases, decoding, encoding, errors, io, shared
from .bases import *  # noqa: F403
from .decoding import *  # noqa: F403
from .encoding import *  # noqa: F403
from .errors import *  # noqa: F403
from .format import LIMITS  # noqa: F401 (in __all__)
from .io import *  # noqa: F403
from .shared import *  # noqa: F403
from .zoo import load_base  # noqa: F401 (shared.load_base that also takes zoo names; in __all__)

#: The codec's public names: each module's ``__all__`` (listed there, once), and :data:`LIMITS`.
__all__ = list(
    dict.fromkeys([*encoding.__all__, *decoding.__all__, *shared.__all__, *bases.__all__, *io.__all__, "LIMITS", *errors.__all__])
)
