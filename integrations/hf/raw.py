"""The named datasets ``ndf_cifar10`` and ``ndf_mnist``: their raw copies, readers and layouts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...data import sources
from .feature import _storage_options

__all__ = ["RAW_SOURCES", "RawSource", "read_cifar10", "read_mnist", "read_raw"]


@dataclass(frozen=True)
class RawSource:
    """A dataset that can be built from an official raw copy.

    Attributes:
        name: the ``load_dataset`` name (``"ndf_cifar10"``).
        env_var: environment variable that may name the shard location.
        classes: class names, in label order.
        splits: split names.
        reader: ``reader(raw_dir, split) -> (N x H x W x C uint8 images, N labels)``.
        layout: the expected raw layout, for error messages.
        kinds: the :mod:`ndf_datasets.data.sources` kinds a raw copy may be (the first is assumed
            when none is recognised, so its reader names the missing files).
    """

    name: str
    env_var: str
    classes: tuple[str, ...]
    splits: tuple[str, ...]
    reader: Callable[[str, str], tuple[np.ndarray, np.ndarray]]
    layout: str
    kinds: tuple[str, ...] = ()



_CIFAR_LAYOUT = (
    "<data_dir>/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (the official binary version) or "
    "<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch} (the python version torchvision downloads)"
)
_MNIST_LAYOUT = "<data_dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (also <data_dir>/MNIST/raw/)"


def read_cifar10(raw_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a split of CIFAR-10: the official binary version, or the python version torchvision downloads.

    (:func:`ndf_datasets.data.sources.read_cifar10_bin` / ``read_cifar10_py``; the pickles are
    read with the restricted unpickler, which rebuilds arrays and executes nothing.)

    Args:
        raw_dir: the folder holding ``cifar-10-batches-bin/`` or ``cifar-10-batches-py/`` (or
            that folder itself), or a URL.
        split: ``"train"`` (``data_batch_1..5[.bin]``) or ``"test"`` (``test_batch[.bin]``).

    Returns:
        ``N x 32 x 32 x 3`` uint8 images and ``N`` int64 labels.

    Raises:
        FileNotFoundError: a batch file is missing (the message gives the layout).
        ValueError: a file whose size is not a whole number of records.
    """
    options = _storage_options(raw_dir)
    if sources.detect_kind(raw_dir, options) == "cifar10-py":
        images, labels, _ = sources.read_cifar10_py(raw_dir, split, options)
        return images, labels
    return sources.read_cifar10_bin(raw_dir, split, options)


def read_mnist(raw_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a split of MNIST from its IDX files (:func:`ndf_datasets.data.sources.read_mnist`).

    Args:
        raw_dir: the folder holding ``train-images-idx3-ubyte.gz`` etc. (or ``MNIST/raw/``), or a URL.
        split: ``"train"`` or ``"test"`` (the ``t10k`` files).

    Returns:
        ``N x 28 x 28 x 1`` uint8 images and ``N`` int64 labels.

    Raises:
        FileNotFoundError: a file is missing. ValueError: a malformed file or a count mismatch.
    """
    return sources.read_mnist(raw_dir, split, _storage_options(raw_dir))


RAW_SOURCES: dict[str, RawSource] = {
    "cifar10": RawSource(
        "ndf_cifar10",
        "NDF_CIFAR10_URL",
        sources.CIFAR10_CLASSES,
        ("train", "test"),
        read_cifar10,
        _CIFAR_LAYOUT,
        ("cifar10-bin", "cifar10-py"),
    ),
    "mnist": RawSource(
        "ndf_mnist",
        "NDF_MNIST_URL",
        tuple(str(d) for d in range(10)),
        ("train", "test"),
        read_mnist,
        _MNIST_LAYOUT,
        ("mnist",),
    ),
}


def read_raw(
    source: RawSource, raw_dir: str, split: str, max_images: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a split of a raw copy, keeping the first ``max_images`` images."""
    images, labels = source.reader(raw_dir, split)
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(source.classes):
        raise ValueError(f"{source.name} {split}: labels outside 0..{len(source.classes) - 1} in {raw_dir}")
    return (images[:max_images], labels[:max_images]) if max_images is not None else (images, labels)
