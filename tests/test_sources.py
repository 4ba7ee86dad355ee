"""Raw dataset readers, ImageFolder / file-list sources, the restricted unpickler and shard bytes.

Every input is made here, tiny (a few 8x8 / 32x32 images); nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ndf_datasets.codec.errors import NDFFormatError
from ndf_datasets.data import shards
from ndf_datasets.data.sources import (
    CIFAR10_CLASSES,
    SourceError,
    detect_kind,
    open_source,
    read_cifar10_bin,
    read_cifar10_py,
    read_mnist,
    restricted_loads,
)

from .conftest import make_image

# ----------------------------------------------------------------------------- fake raw copies


def write_mnist(root: Path, train: int = 6, test: int = 3, gz: bool = True) -> Path:
    """The four MNIST IDX files (gzipped or not), labels ``i % 10``."""
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    for prefix, n in (("train", train), ("t10k", test)):
        images = np.stack([make_image(28, 28, 1, seed=i + (50 if prefix == "t10k" else 0))[..., 0] for i in range(n)])
        (root / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(
            pack(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        )
        (root / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(
            pack(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
        )
    return root


def cifar_images(seed: int, n: int) -> tuple[np.ndarray, list[int]]:
    """``n`` 32x32 RGB images and their labels."""
    return np.stack([make_image(32, 32, 3, seed=seed * 10 + i) for i in range(n)]), [(seed + i) % 10 for i in range(n)]


def write_cifar_bin(root: Path, per_batch: int = 2, test: int = 2, meta: bool = True) -> Path:
    """A fake ``cifar-10-batches-bin`` copy (official record layout)."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for b, name in [(b, f"data_batch_{b}.bin") for b in range(1, 6)] + [(7, "test_batch.bin")]:
        images, labels = cifar_images(b, test if b == 7 else per_batch)
        (folder / name).write_bytes(
            b"".join(bytes([lab]) + im.transpose(2, 0, 1).tobytes() for im, lab in zip(images, labels))
        )
    if meta:
        (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return root


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle wrote the CIFAR-10 python batches:
    protocol 2, every string a py2 ``str`` (BINSTRING), numpy as ``numpy.core.multiarray``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj, *_):
        data = obj.encode("latin-1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_cifar_py(root: Path, per_batch: int = 2, test: int = 2, py2: bool = True) -> Path:
    """A fake ``cifar-10-batches-py`` copy: the same images as :func:`write_cifar_bin`.

    Each batch is what the original is: a pickled dict with ``data`` (uint8 N x 3072, R, G, B
    planes), ``labels`` (list), ``filenames`` and ``batch_label``, protocol 2.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    dump = py2_pickle if py2 else (lambda o: pickle.dumps(o, protocol=2))
    for b, name in [(b, f"data_batch_{b}") for b in range(1, 6)] + [(7, "test_batch")]:
        images, labels = cifar_images(b, test if b == 7 else per_batch)
        batch = {
            b"batch_label": f"batch {b} of 5".encode(),
            b"labels": labels,
            b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1).copy(),
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(len(images))],
        }
        (folder / name).write_bytes(dump(batch))
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(dump(meta))
    return root


def write_image_folder(
    root: Path, counts: dict[str, int], classes=("cat", "dog"), side: int = 8, mode: str = "RGB"
) -> Path:
    """``root/<split>/<class>/<i>.png`` (a single split named ``"."`` writes ``root/<class>/``)."""
    for s, (split, n) in enumerate(counts.items()):
        for c, name in enumerate(classes):
            folder = root / split / name if split != "." else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                im = make_image(side, side, 1 if mode == "L" else 3, seed=1000 * s + 100 * c + i)
                Image.fromarray(im[..., 0] if mode == "L" else im).save(folder / f"{i:02d}.png")
    return root


# ----------------------------------------------------------------------------- MNIST


def test_mnist_reader_plain_and_gzipped(tmp_path):
    a, la = read_mnist(str(write_mnist(tmp_path / "gz")), "train")
    b, lb = read_mnist(str(write_mnist(tmp_path / "plain", gz=False)), "train")
    assert a.shape == (6, 28, 28, 1) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert lb.tolist() == la.tolist() == [0, 1, 2, 3, 4, 5]
    assert detect_kind(str(tmp_path / "gz")) == "mnist"


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: struct.pack(">I", 0x801) + d[4:], "magic is 0x00000801, expected 0x00000803"),
        (lambda d: d[:-5], "declares shape (3, 28, 28)"),
        (lambda d: d[:6], "too short for an IDX header"),
        (lambda d: d + b"\x00", "holds 2353 bytes"),
    ],
)
def test_mnist_reader_names_the_file_and_the_problem(tmp_path, damage, message):
    root = write_mnist(tmp_path / "m", gz=False)
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SourceError, match="t10k-images-idx3-ubyte") as err:
        read_mnist(str(root), "test")
    assert message in str(err.value)


def test_mnist_missing_file_and_bad_gzip(tmp_path):
    root = write_mnist(tmp_path / "m")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        read_mnist(str(root), "test")
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SourceError, match="t10k-labels-idx1-ubyte.gz: not a valid gzip file"):
        read_mnist(str(root), "test")


# ----------------------------------------------------------------------------- CIFAR-10


def test_cifar_bin_reader_and_class_names(tmp_path):
    root = write_cifar_bin(tmp_path / "c")
    images, labels = read_cifar10_bin(str(root), "train")
    expected = np.concatenate([cifar_images(b, 2)[0] for b in range(1, 6)])
    assert np.array_equal(images, expected) and labels.tolist() == [(b + i) % 10 for b in range(1, 6) for i in range(2)]
    src = open_source(root)
    assert src.kind == "cifar10-bin" and src.classes == CIFAR10_CLASSES and len(src.splits["test"]) == 2
    (root / "cifar-10-batches-bin" / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(SourceError, match="batches.meta.txt: lists 2 class names"):
        open_source(root)


def test_cifar_bin_bad_record_size_and_label(tmp_path):
    root = write_cifar_bin(tmp_path / "c")
    test = root / "cifar-10-batches-bin" / "test_batch.bin"
    data = test.read_bytes()
    test.write_bytes(data[:-1])
    with pytest.raises(SourceError, match=r"test_batch.bin: 6145 bytes is not a whole number of 3073-byte"):
        read_cifar10_bin(str(root), "test")
    test.write_bytes(bytes([12]) + data[1:])
    with pytest.raises(SourceError, match=r"test_batch.bin: labels outside 0..9"):
        read_cifar10_bin(str(root), "test")


@pytest.mark.parametrize("py2", [True, False], ids=["py2-cPickle", "py3-protocol2"])
def test_cifar_py_reads_the_same_pixels_as_the_binary_version(tmp_path, py2):
    py = write_cifar_py(tmp_path / "py", py2=py2)
    binary = write_cifar_bin(tmp_path / "bin")
    for split in ("train", "test"):
        images, labels, names = read_cifar10_py(str(py), split)
        ref_images, ref_labels = read_cifar10_bin(str(binary), split)
        assert np.array_equal(images, ref_images) and labels.tolist() == ref_labels.tolist()
    assert names == ["img_7_0.png", "img_7_1.png"]
    src = open_source(py / "cifar-10-batches-py")
    assert src.kind == "cifar10-py" and src.classes == CIFAR10_CLASSES
    assert src.splits["train"].names(0, 2) == ["img_1_0.png", "img_1_1.png"]


def test_py2_fake_batch_is_faithful():
    """The fake batch uses exactly the globals of the originals (and only py2 strings)."""
    import pickletools

    data = py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]})
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    globals_ = sorted({arg for name, arg in ops if name == "GLOBAL"})
    assert globals_ == ["numpy dtype", "numpy ndarray", "numpy.core.multiarray _reconstruct"]
    assert not {name for name, _ in ops} & {"BINUNICODE", "SHORT_BINUNICODE", "SHORT_BINBYTES", "BINBYTES"}


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for payload in (pickle.dumps(Evil(), protocol=2), b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."):
        with pytest.raises(SourceError, match=r"batch_x: refusing to load global (os|posix)\.system"):
            restricted_loads(payload, "batch_x")
    assert not marker.exists()
    for name in (b"builtins\neval", b"copy_reg\n_reconstructor", b"numpy\nfrombuffer"):
        with pytest.raises(SourceError, match="refusing to load global"):
            restricted_loads(b"c" + name + b"\n.", "f")


def test_restricted_unpickler_checks_array_sizes_and_types(tmp_path):
    good = pickle.dumps(np.arange(6, dtype=np.uint8).reshape(2, 3), protocol=2)
    assert restricted_loads(good, "f").tolist() == [[0, 1, 2], [3, 4, 5]]
    huge = good.replace(b"K\x02K\x03", b"J\x00\x00\x00\x40J\x00\x00\x00\x40", 1)  # shape (2^30, 2^30), 6 bytes
    assert huge != good
    with pytest.raises(SourceError, match="needs .* bytes, the data has 6"):
        restricted_loads(huge, "f")
    with pytest.raises(SourceError, match="dtype 'f8' is not allowed"):
        restricted_loads(pickle.dumps(np.zeros(2), protocol=2), "f")
    with pytest.raises(SourceError, match="f: not a valid CIFAR-10 python batch"):
        restricted_loads(good[:-7], "f")
    root = write_cifar_py(tmp_path / "py")
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(SourceError, match=r"test_batch: b'data' must be a uint8 array N x 3072"):
        read_cifar10_py(str(root), "test")


# ----------------------------------------------------------------------------- ImageFolder, files


def test_image_folder_with_and_without_split_folders(tmp_path):
    flat = open_source(write_image_folder(tmp_path / "flat", {".": 2}))
    assert flat.kind == "imagefolder" and list(flat.splits) == ["train"] and flat.classes == ("cat", "dog")
    assert flat.splits["train"].labels == [0, 0, 1, 1] and flat.splits["train"].names(2, 4) == [
        "dog/00.png",
        "dog/01.png",
    ]
    split = open_source(write_image_folder(tmp_path / "split", {"train": 2, "test": 1}, mode="L"))
    assert list(split.splits) == ["train", "test"] and len(split.splits["test"]) == 2
    (image,) = split.splits["test"].images(1, 2)
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8  # grey stays grey
    files = open_source([tmp_path / "flat" / "cat" / "00.png", tmp_path / "flat" / "dog" / "01.png"])
    assert files.kind == "files" and files.classes == () and files.splits["train"].labels == [None, None]
    assert files.splits["train"].images(0, 2)[1].shape == (8, 8, 3)


@pytest.mark.parametrize(
    "layout, splits",
    [({".": 2}, ["train"]), ({"train": 2}, ["train"]), ({"test": 2}, ["test"]), ({"train": 2, "val": 1, "test": 1}, ["train", "test", "val"])],
    ids=["flat-classes", "one-split-folder", "only-test", "several-split-folders"],
)
def test_image_folder_layouts_torchvision_users_have(tmp_path, layout, splits):
    """root/<class>/, root/train/<class>/ alone (issue 12: was read as classes 'train'), root/{train,val,test}/<class>/."""
    root = write_image_folder(tmp_path / "root", layout)
    src = open_source(root)
    assert list(src.splits) == splits and src.classes == ("cat", "dog")
    for name, split in src.splits.items():
        n = layout.get(name, layout.get("."))
        assert split.labels == [0] * n + [1] * n
        prefix = "" if "." in layout else f"{name}/"
        assert split.names(0, 1) == [f"{prefix}cat/00.png"]
        assert split.images(0, 2 * n)[-1].shape == (8, 8, 3)  # every file is found where it is


def test_image_folder_errors_name_the_file(tmp_path):
    root = write_image_folder(tmp_path / "f", {".": 1})
    (root / "dog" / "zz.png").write_bytes(b"not a png")
    src = open_source(root)
    with pytest.raises(SourceError, match=r"dog/zz.png: not a readable image"):
        src.splits["train"].images(0, 3)
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        open_source(tmp_path / "f" / "cat")
    with pytest.raises(FileNotFoundError, match="missing.png: no such image file"):
        open_source([root / "cat" / "00.png", root / "missing.png"])


# ----------------------------------------------------------------------------- shards


def test_shards_are_deterministic_and_read_back_strictly():
    samples = [shards.Sample(f"{i:06d}", bytes([i]) * (100 + i), i % 3, {"i": i}) for i in range(5)]
    data = shards.shard_bytes(samples)
    assert data == shards.shard_bytes(samples) and len(data) % 10240 == 0
    rows = shards.parse_shard(data, "s.tar")
    assert [k for k, _ in rows] == [s.key for s in samples] and rows[2][1]["cls"] == b"2"
    for bad in (data[:-512], data[:1000], data + b"\0" * 512):
        with pytest.raises(NDFFormatError, match="s.tar"):
            shards.parse_shard(bad, "s.tar")
