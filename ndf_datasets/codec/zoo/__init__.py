"""The model zoo: trained shared bases shipped inside the package, loaded by name.

``ndf.load_base("cifar10")`` (CIFAR-10 train split, ``hyper-field``, 9,844 decoder MACs per
pixel), ``"cifar10-wide"`` (the previous ``cifar10`` network with entropy networks twice as
wide, 13,200 MACs per pixel: ~2% fewer bytes at a mean-PSNR target), ``"mnist"`` (MNIST train
split, ``pixel-context``) and ``"natural"`` (natural RGB images of any size, ``hyper-field``).
The CIFAR-10 bases have their scales calibrated on CIFAR-10 train images (``calibrate``).
Each file's metadata records how it was trained and on what data (``ndf info`` prints it); the
files are ordinary base files, read like any other (nothing in them is executed).
"""

from __future__ import annotations

import os
import threading
from importlib import resources

from ..shared import SharedBase
from ..shared import load_base as _load_file

__all__ = ["ZOO", "zoo_path", "load_base", "zoo_names"]

#: Zoo name -> file name inside this package.
ZOO: dict[str, str] = {
    "cifar10": "cifar10.ndfbase",
    "cifar10-wide": "cifar10_wide.ndfbase",
    "mnist": "mnist.ndfbase",
    "natural": "natural.ndfbase",
}

_lock = threading.Lock()
_loaded: dict[str, SharedBase] = {}


def zoo_names() -> list[str]:
    """The zoo bases this installation holds."""
    return [name for name, f in ZOO.items() if resources.files(__name__).joinpath(f).is_file()]


def zoo_path(name: str) -> str:
    """The path of a zoo base.

    Raises:
        KeyError: no zoo base of that name (the message lists the names there are).
    """
    if name not in ZOO or not resources.files(__name__).joinpath(ZOO[name]).is_file():
        raise KeyError(f"no zoo base named {name!r}; this installation has {zoo_names()}")
    return os.fspath(resources.files(__name__).joinpath(ZOO[name]))


def load_base(src: str | os.PathLike | bytes, source: str | None = None) -> SharedBase:
    """Load a shared base: a zoo name (``"cifar10"``, ``"cifar10-wide"``, ``"mnist"``, ``"natural"``), a path, or bytes.

    Zoo bases are loaded once per process. Nothing in a base file is executed.

    Raises:
        NDFError: the file is not a valid base (subclass says why).
        FileNotFoundError: no such file (and no zoo base of that name).
    """
    if isinstance(src, str) and src in ZOO and not os.path.exists(src):
        with _lock:
            if src not in _loaded:
                try:
                    path = zoo_path(src)
                except KeyError as exc:
                    raise FileNotFoundError(str(exc.args[0])) from None
                _loaded[src] = _load_file(path, source=f"zoo:{src}")
            return _loaded[src]
    if isinstance(src, (str, os.PathLike)) and not os.path.exists(src):
        raise FileNotFoundError(f"{os.fspath(src)!r} is neither a base file nor a zoo base (this installation's zoo: {zoo_names()})")
    return _load_file(src, source)
