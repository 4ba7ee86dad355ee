"""``ndf convert`` / ``ndf.convert``: every source kind, every layout, every reader, resume
after ``kill -9``, atomic shards, S3 output (moto), torchrun with two processes.

The reference conversion uses the defaults (compact WebDataset shards: one ``.ndf`` member
per sample, gzip-compressed), so the resume, torchrun and S3 tests run on that layout.

Tiny data (8x8 images, tens of them, a one-epoch base, a fixed step budget). The reference
conversion runs once per module in a subprocess; the resume and torchrun tests must
reproduce it byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ndf_datasets as ndf
from ndf_datasets.cli import main as cli_main
from ndf_datasets.codec.io import write_atomic
from ndf_datasets.data import shards
from ndf_datasets.data.conversion import JOB_FILE, MANIFEST

from .test_sources import write_cifar_bin, write_cifar_py, write_image_folder, write_mnist

try:  # the moto fixtures; the S3 test skips without them
    from .s3server import s3_bucket, s3_env, s3_server  # noqa: F401
except ImportError:  # pragma: no cover
    s3_bucket = None

#: the conversion every byte-for-byte comparison uses: 16 train + 8 test images, 6 shards of 4
ARGS = ["--shard-size", "4", "--batch-size", "4", "--steps", "100", "--no-early-stop", "--base", "fit", "--base-epochs", "1"]
ARGS += ["--psnr", "24", "-q"]
KW = dict(shard_size=4, batch_size=4, steps=100, early_stop=False, base=None, base_epochs=1, psnr=24.0, progress=False)
FAST = dict(shard_size=2, batch_size=4, steps=5, base=None, base_epochs=1, psnr=20.0, progress=False)
SHARD = re.compile(r"[a-z]+-\d{6}\.tar\.gz")
UNITS = 6


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the results do not depend on it, but 2 shared cores are much faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli(src: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ndf_datasets.cli", "convert", str(src), str(out), *ARGS, *extra]


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """``src/{train,test}/{cat,dog}/NN.png``: 8 + 4 images per class, 8x8 RGB."""
    return write_image_folder(tmp_path_factory.mktemp("convert") / "src", {"train": 8, "test": 4})


@pytest.fixture(scope="module")
def reference(src) -> Path:
    """One uninterrupted single-process conversion (a subprocess, like the runs it is compared with)."""
    out = src.parent / "reference"
    done = subprocess.run(_cli(src, out), env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert len([n for n in os.listdir(out) if SHARD.fullmatch(n)]) == UNITS
    return out


# ----------------------------------------------------------------------------- determinism


def test_encode_batch_is_deterministic():
    images = [
        np.ascontiguousarray(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)) for i in range(6)
    ]
    base = ndf.fit_base(images, epochs=1, progress=False)
    torch.manual_seed(1)
    a = ndf.encode_batch(images[:4], psnr=24.0, base=base, steps=30, batch_size=4, labels=[0, 1, 0, 1])
    torch.manual_seed(2)
    torch.rand(1000)
    ndf.encode_batch(images[2:], psnr=24.0, base=base, steps=30)  # other work in between changes nothing
    b = ndf.encode_batch(images[:4], psnr=24.0, base=base, steps=30, batch_size=4, labels=[0, 1, 0, 1])
    assert a == b


# ----------------------------------------------------------------------------- resume, atomicity


class ShardWatcher(threading.Thread):
    """Polls a folder while conversions run: a file under a final shard name must always be a complete tar."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.stop, self.checked, self.errors = folder, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.is_set():
            for name in os.listdir(self.folder) if self.folder.exists() else []:
                if SHARD.fullmatch(name) or name in (MANIFEST, JOB_FILE):
                    try:
                        data = (self.folder / name).read_bytes()
                        shards.parse_shard(data, name) if name.endswith((".tar", ".tar.gz")) else json.loads(data)
                        self.checked += 1
                    except Exception as exc:  # noqa: BLE001 - collected and asserted on
                        self.errors.append(f"{name}: {exc}")
            time.sleep(0.005)


def _count_shards(out: Path) -> int:
    return len([n for n in os.listdir(out) if SHARD.fullmatch(n)]) if out.exists() else 0


def test_resume_after_kill_9_is_byte_identical(src, reference, tmp_path):
    rng = random.Random(20240605)
    out = tmp_path / "out"
    watcher = ShardWatcher(out)
    watcher.start()
    interrupted = 0
    try:
        for shards_before_kill in (0, 2, 4):
            proc = subprocess.Popen(_cli(src, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:
                if (out / JOB_FILE).exists() and _count_shards(out) >= shards_before_kill:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            proc.kill()  # SIGKILL: no cleanup of any kind
            proc.wait()
            interrupted += not (out / MANIFEST).exists()
        assert interrupted >= 2, "the kills came too late to interrupt anything"
        done = subprocess.run(_cli(src, out), env=_env(), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
    finally:
        watcher.stop.set()
        watcher.join()
    assert watcher.errors == [] and watcher.checked > 0
    assert digest(out) == digest(reference)


def test_resume_checks_what_it_keeps(src, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / MANIFEST).unlink()
    data = (out / "train-000001.tar.gz").read_bytes()
    (out / "train-000001.tar.gz").write_bytes(data[: len(data) // 2])  # truncated: redone
    shutil.copy(out / "train-000000.tar.gz", out / "test-000001.tar.gz")  # valid shard, wrong samples: redone
    (out / "stats" / "test-000000.json").unlink()  # rebuilt from the shard (PSNR measured again)
    (out / ".train-000002.tar.gz.4242.ndf-tmp").write_bytes(b"left by a killed run")
    result = ndf.convert(src, out, **KW)
    assert (result.skipped, result.encoded) == (4, 8)
    assert digest(out) == digest(reference)


def test_refuses_foreign_or_changed_output(src, reference, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        ndf.convert(src, foreign, **FAST)
    changed = tmp_path / "changed"
    shutil.copytree(reference, changed)
    with pytest.raises(ValueError, match=r"settings.psnr: 24.0 -> 25.0"):
        ndf.convert(src, changed, **{**KW, "psnr": 25.0})
    with pytest.raises(ValueError, match="overlap"):
        ndf.convert(src, src / "out", **FAST)
    pngs = sorted(src.rglob("*.png"))
    ndf.convert(pngs[:2], tmp_path / "list", **FAST)
    with pytest.raises(ValueError, match=r"source.fingerprint"):  # same count, other files
        ndf.convert([pngs[0], pngs[2]], tmp_path / "list", **FAST)
    ndf.convert(src, foreign, force=True, max_images=2, **FAST)
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / MANIFEST).exists()
    ndf.convert(src, changed, force=True, max_images=2, **FAST)  # starts the other job over
    assert json.loads((changed / MANIFEST).read_text())["counts"] == {"train": 2, "test": 2}
    assert sorted(n for n in os.listdir(changed) if SHARD.fullmatch(n)) == ["test-000000.tar.gz", "train-000000.tar.gz"]


def test_write_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "train-000000.tar"
    write_atomic(target, b"complete")

    def killed(fd):
        raise KeyboardInterrupt  # interrupted after the data was written, before the rename

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new" * 1000)
    assert target.read_bytes() == b"complete" and os.listdir(target.parent) == ["train-000000.tar"]


# ----------------------------------------------------------------------------- torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one(src, reference, tmp_path):
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "ndf_datasets.cli"]
    cmd = launcher + _cli(src, out)[3:]
    env = {**_env(), "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("encoded 12 here") == 2  # each rank did half of the 24 images
    assert digest(out) == digest(reference)


# ----------------------------------------------------------------------------- readers


def test_every_reader_gets_the_same_tensors(src, reference, tmp_path):
    datasets = pytest.importorskip("datasets")
    wds = pytest.importorskip("webdataset")
    from ndf_datasets.integrations.torchvision import NDFImageFolder
    from ndf_datasets.integrations.webdataset import ndf_decoder, ndf_samples

    ndf.clear_base_cache()
    rows = datasets.load_dataset(str(reference), split="train", cache_dir=str(tmp_path / "hf")).with_format("torch")
    assert rows.features["label"].names == ["cat", "dog"] and len(rows) == 16
    urls = [str(reference / n) for n in sorted(os.listdir(reference)) if n.startswith("train-")]
    pipeline = (
        wds.WebDataset(urls, shardshuffle=False)
        .map(ndf_samples(ndf_decoder(size=None)))
        .to_tuple("__key__", "ndf", "cls")
    )
    streamed = list(pipeline)
    assert [k for k, _, _ in streamed] == list(rows["key"])
    for (key, x, label), row in zip(streamed, rows):
        assert torch.equal(x, row["image"]) and int(label) == row["label"]

    files = tmp_path / "files"
    result = ndf.convert(src, files, layout="files", **KW)
    assert result.base_hash == json.loads((reference / MANIFEST).read_text())["base_hash"]
    ndf.clear_base_cache()
    folder = NDFImageFolder(files / "train", size=None)
    assert folder.classes == ["cat", "dog"] and len(folder) == 16
    by_key = {key: parts for url in urls for key, parts in shards.iter_shard(url)}
    for (path, target), row in zip(folder.samples, rows):
        assert Path(path).stem == row["key"] and target == row["label"]
        assert Path(path).read_bytes() == by_key[row["key"]]["ndf"]  # the same records in both layouts
    for i in (0, 9, 15):
        assert torch.equal(folder[i][0], rows[i]["image"])
    manifest = json.loads((files / MANIFEST).read_text())
    assert manifest["layout"] == "files" and manifest["splits"]["test"]["root"] == "test"
    assert (
        manifest["splits"]["train"]["psnr"] == json.loads((reference / MANIFEST).read_text())["splits"]["train"]["psnr"]
    )


@pytest.mark.parametrize(
    "layout, extra",
    [("parquet", {}), ("webdataset", {"members": ["cls", "json"], "compress": False}), ("files", {})],
    ids=["parquet", "tar-with-cls-json", "files"],
)
def test_each_layout_holds_the_same_records_and_loads_back(src, reference, tmp_path, layout, extra):
    """``--format parquet|webdataset|files`` from the same base: the same records, the same rows through
    ``load_dataset(OUT)`` (and ``load_dataset("parquet", data_files=...)``), the layout in the manifest."""
    datasets = pytest.importorskip("datasets")
    from ndf_datasets.data.footprint import dataset_info

    (base_file,) = reference.glob("*.ndfbase")
    out = tmp_path / "out"
    result = ndf.convert(src, out, layout=layout, **{**KW, "base": base_file}, **extra)
    manifest = result.manifest
    assert manifest["layout"] == layout and manifest["base_hash"] == base_file.stem
    ref_manifest = json.loads((reference / MANIFEST).read_text())
    assert manifest["stats"]["bytes"] == ref_manifest["stats"]["bytes"]  # the same records, byte for byte
    assert manifest["splits"]["train"]["psnr"] == ref_manifest["splits"]["train"]["psnr"]  # measured the same way
    ndf.clear_base_cache()
    want = datasets.load_dataset(str(reference), split="test", cache_dir=str(tmp_path / "hf0")).with_format("torch")
    got = datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "hf1")).with_format("torch")
    assert got.features["label"].names == ["cat", "dog"] and list(got["key"]) == list(want["key"])
    assert list(got["label"]) == list(want["label"])
    for a, b in zip(got, want):
        assert torch.equal(a["image"], b["image"])
    if layout == "parquet":  # datasets' own Parquet builder: NDFImage from the schema, the base next to the files
        ndf.clear_base_cache()
        own = datasets.load_dataset(
            "parquet", data_files={"test": str(out / "test-*.parquet")}, split="test", cache_dir=str(tmp_path / "hf2")
        ).with_format("torch")
        assert type(own.features["image"]).__name__ == "NDFImage" and own.features["label"].names == ["cat", "dog"]
        assert torch.equal(own[5]["image"], want[5]["image"]) and list(own["label"]) == list(want["label"])
    info = dataset_info(str(out))
    assert info["bytes"]["records"] == manifest["stats"]["bytes"]["total"]
    assert info["bytes"]["data"] == manifest["footprint"]["bytes"]["data"]
    assert info["bytes"]["containers"] == info["bytes"]["data"] - info["bytes"]["records"] >= 0


@pytest.mark.filterwarnings("ignore:.*can not reach:UserWarning")  # a 20-step base: quality is not the point
def test_compact_records_of_a_learned_base_in_every_layout_and_loader(tmp_path):
    """Codec v2's compact records (no magic, a 1-byte base tag, a CRC only checkable with the base)
    through convert in each layout, then load_dataset(OUT), NDFWebDataset and NDFImageFolder."""
    datasets = pytest.importorskip("datasets")
    from ndf_datasets.integrations.torchvision import NDFImageFolder
    from ndf_datasets.integrations.webdataset import NDFWebDataset, ndf_decoder, ndf_samples

    from ndf_datasets.codec.training import TrainSettings, train_base

    from .test_learned import HYPER_CFG, _images

    torch.manual_seed(0)
    settings = TrainSettings(arch="hyper-field", config=HYPER_CFG, steps=20, batch_size=8, lr=3e-3, warmup=5)
    base = ndf.load_base(train_base(_images(24, 16, 16), settings, progress=False).to_bytes())
    base.save(tmp_path / "learned.ndfbase")
    src = write_image_folder(tmp_path / "src", {"train": 3}, side=16)
    want = None
    for layout in ("webdataset", "parquet", "files"):
        out = tmp_path / layout
        result = ndf.convert(src, out, layout=layout, base=tmp_path / "learned.ndfbase", shard_size=4, progress=False)
        assert result.manifest["footprint"]["bytes"]["records"] == result.manifest["stats"]["bytes"]["total"]
        ndf.clear_base_cache()
        rows = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / f"hf-{layout}")).with_format("torch")
        assert list(rows["label"]) == [0, 0, 0, 1, 1, 1]
        got = torch.stack([r["image"] for r in rows])
        want = got if want is None else want
        assert torch.equal(got, want)
    ndf.clear_base_cache()
    urls = sorted(str(p) for p in (tmp_path / "webdataset").glob("train-*.tar.gz"))
    streamed = list(NDFWebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=None))).to_tuple("ndf", "cls"))
    assert [c for _, c in streamed] == [0, 0, 0, 1, 1, 1] and torch.equal(torch.stack([x for x, _ in streamed]), want)
    ndf.clear_base_cache()
    folder = NDFImageFolder(tmp_path / "files" / "train", size=None)
    assert torch.equal(torch.stack([folder[i][0] for i in range(len(folder))]), want)


def test_footprint_in_the_manifest_and_ndf_info(reference, capsys):
    manifest = json.loads((reference / MANIFEST).read_text())
    assert manifest["layout"] == "webdataset" and manifest["members"] == ["ndf"] and manifest["compression"] == "gzip"
    fp = manifest["footprint"]
    shards = sum(p.stat().st_size for p in reference.iterdir() if SHARD.fullmatch(p.name))
    assert fp["bytes"]["data"] == shards and fp["bytes"]["records"] == manifest["stats"]["bytes"]["total"]
    assert fp["bytes"]["base"] == next(reference.glob("*.ndfbase")).stat().st_size
    assert fp["per_image"]["data"] == round(shards / 24, 2) and fp["images"] == 24
    assert cli_main(["info", str(reference)]) == 0
    text = capsys.readouterr().out
    assert "24 images" in text and "records" in text and "containers" in text and "data / records" in text
    assert cli_main(["info", str(reference), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["bytes"]["data"] == shards and info["allocated"]["data"] >= shards


# ----------------------------------------------------------------------------- sources


def test_each_source_kind(tmp_path, capsys):
    mnist = ndf.convert(write_mnist(tmp_path / "mnist", train=5, test=3), tmp_path / "o-mnist", max_images=4, **FAST)
    assert mnist.counts == {"train": 4, "test": 3} and mnist.manifest["classes"] == [str(d) for d in range(10)]
    assert mnist.manifest["splits"]["test"]["label_counts"][:4] == [1, 1, 1, 0]

    binary = write_cifar_bin(tmp_path / "cbin")
    python = write_cifar_py(tmp_path / "cpy")
    (python / "cifar-10-batches-py" / "batches.meta").write_bytes(
        (python / "cifar-10-batches-py" / "batches.meta").read_bytes().replace(b"airplane", b"aeroplan")
    )
    out_bin = ndf.convert(binary, tmp_path / "o-bin", max_images=4, **FAST)
    out_py = ndf.convert(
        python / "cifar-10-batches-py", tmp_path / "o-py", max_images=4, members=["cls", "json"], compress=False,
        **{**FAST, "progress": True},
    )  # fmt: skip
    assert out_py.manifest["classes"][0] == "aeroplan" and out_bin.manifest["classes"][0] == "airplane"
    assert out_bin.manifest["members"] == ["ndf"] and out_py.manifest["members"] == ["ndf", "cls", "json"]
    for name in ("train-000001", "test-000000"):  # same pixels and labels: same records
        a = dict(shards.iter_shard(str(tmp_path / "o-bin" / f"{name}.tar.gz")))
        b = dict(shards.iter_shard(str(tmp_path / "o-py" / f"{name}.tar")))
        assert [p["ndf"] for p in a.values()] == [p["ndf"] for p in b.values()]
        assert all(list(p) == ["ndf"] for p in a.values()) and all(list(p) == ["ndf", "cls", "json"] for p in b.values())
    assert json.loads(b["000001"]["json"])["file"] == "img_7_1.png"
    err = capsys.readouterr().err
    assert "fitting base" in err and "img/s" in err and "psnr=" in err

    folder = write_image_folder(tmp_path / "grey", {".": 2}, mode="L")
    by_url = ndf.convert(f"file://{folder}", tmp_path / "o-url", **FAST)
    assert by_url.counts == {"train": 4} and by_url.manifest["source"]["kind"] == "imagefolder"
    listed = ndf.convert(sorted(folder.rglob("*.png"))[1:], tmp_path / "o-files", layout="files", **FAST)
    assert listed.counts == {"train": 3} and listed.manifest["classes"] == []
    assert sorted(p.name for p in (tmp_path / "o-files" / "train" / "unlabeled").iterdir()) == [
        "000000.ndf",
        "000001.ndf",
        "000002.ndf",
    ]
    x = ndf.decode(
        (tmp_path / "o-files" / "train" / "unlabeled" / "000000.ndf").read_bytes(),
        base=ndf.load_base(next((tmp_path / "o-files").glob("*.ndfbase"))),
    )
    assert x.shape == (1, 8, 8)


@pytest.mark.parametrize(
    "layout", [{".": 2}, {"train": 2}, {"train": 2, "test": 1}], ids=["flat-classes", "one-split-folder", "split-folders"]
)
def test_cli_converts_each_image_folder_layout(tmp_path, layout):
    """``ndf convert root out`` for root/<class>/, root/train/<class>/ alone (issue 12) and root/{train,test}/<class>/."""
    root = write_image_folder(tmp_path / "root", layout)
    out = tmp_path / "out"
    args = ["--shard-size", "2", "--batch-size", "4", "--steps", "5", "--base", "fit", "--base-epochs", "1", "--psnr", "20", "-q"]
    assert cli_main(["convert", str(root), str(out), *args]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    want = {s: 2 * n for s, n in layout.items()} if "." not in layout else {"train": 4}
    assert manifest["counts"] == want and manifest["classes"] == ["cat", "dog"]


def test_given_base_is_used(src, reference, tmp_path):
    (base_file,) = reference.glob("*.ndfbase")
    result = ndf.convert(src, tmp_path / "o", splits=["test"], **{**FAST, "base_epochs": 99, "base": base_file})
    assert result.base_hash == base_file.stem and result.counts == {"test": 8}
    assert json.loads((tmp_path / "o" / JOB_FILE).read_text())["settings"]["base"] == base_file.stem


def test_cli_reports_bad_input(tmp_path, capsys):
    raw = write_mnist(tmp_path / "m", gz=False)
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    assert cli_main(["convert", str(raw), str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "ndf convert: error:" in err and "train-images-idx3-ubyte: declares shape (6, 28, 28)" in err
    assert not (tmp_path / "o").exists()
    assert cli_main(["convert", str(tmp_path / "nothing"), str(tmp_path / "o"), "-q"]) == 1
    assert "no such folder or file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- S3


@pytest.mark.skipif(s3_bucket is None, reason="tests/s3server.py is not available")
def test_s3_source_and_output(src, reference, s3_bucket, tmp_path):
    datasets = pytest.importorskip("datasets")
    fs = s3_bucket.filesystem()
    for p in sorted(src.rglob("*.png")):
        fs.pipe(s3_bucket.path(f"src/{p.relative_to(src).as_posix()}"), p.read_bytes())
    options = s3_bucket.storage_options
    out = s3_bucket.url("out")
    first = ndf.convert(s3_bucket.url("src"), out, storage_options=options, **KW)
    assert first.encoded == 24
    ref = digest(reference)
    names = sorted(p[len(s3_bucket.path("out/")) :] for p in s3_bucket.filesystem().find(s3_bucket.path("out")))
    assert names == sorted(ref)
    for name in names:
        if name not in (JOB_FILE, MANIFEST, "README.md"):  # these name the source location (the card: its bytes)
            assert hashlib.sha256(fs.cat(s3_bucket.path(f"out/{name}"))).hexdigest() == ref[name], name
    shard = s3_bucket.path("out/train-000002.tar.gz")
    fs.pipe(shard, fs.cat(shard)[: len(fs.cat(shard)) // 2])
    again = ndf.convert(s3_bucket.url("src"), out, storage_options=options, **KW)
    assert (again.skipped, again.encoded) == (UNITS - 1, 4)
    assert hashlib.sha256(fs.cat(shard)).hexdigest() == ref["train-000002.tar.gz"]
    ndf.clear_base_cache()
    rows = datasets.load_dataset(out, storage_options=options, split="test", cache_dir=str(tmp_path / "hf"))
    local = datasets.load_dataset(str(reference), split="test", cache_dir=str(tmp_path / "hf2"))
    assert list(rows["key"]) == list(local["key"])
    assert torch.equal(rows.with_format("torch")[5]["image"], local.with_format("torch")[5]["image"])


def test_default_base_is_the_zoo_base_of_the_source_kind(tmp_path):
    """``base="auto"`` / ``psnr="auto"`` (the defaults): MNIST -> the mnist zoo base at 46 dB,
    CIFAR-10 -> cifar10 at 40 dB, RGB image files -> natural at 36 dB; other images (grey
    files) get a fitted base at 30 dB; ``--base fit`` fits one whatever the source."""
    from ndf_datasets.codec.zoo import load_base as zoo

    quick = dict(shard_size=4, batch_size=4, progress=False, max_images=2)
    cases = [
        (write_mnist(tmp_path / "mnist"), "mnist", 46.0),
        (write_cifar_bin(tmp_path / "cifar"), "cifar10", 40.0),
        (write_image_folder(tmp_path / "rgb", {"train": 2}), "natural", 36.0),
    ]
    for src, name, psnr in cases:
        result = ndf.convert(src, tmp_path / f"o-{name}", **quick)
        assert result.base_hash == zoo(name).hash.hex(), name
        assert result.manifest["build"]["psnr"] == psnr and result.manifest["build"]["base"] == zoo(name).hash.hex()
    grey = ndf.convert(write_image_folder(tmp_path / "grey", {"train": 2}, mode="L"), tmp_path / "o-grey",
                       base_epochs=1, steps=5, **quick)  # fmt: skip
    assert grey.manifest["build"]["base"] is None and grey.manifest["build"]["psnr"] == 30.0
    out = tmp_path / "o-fit"
    rgb = tmp_path / "rgb"
    cli = [sys.executable, "-m", "ndf_datasets.cli", "convert", str(rgb), str(out), "--base", "fit", "--base-epochs", "1",
           "--steps", "5", "--max-images", "2", "-q"]  # fmt: skip
    subprocess.run(cli, check=True, env=_env(), capture_output=True, timeout=600)
    assert json.loads((out / MANIFEST).read_text())["build"]["base"] is None
    with pytest.raises(ValueError, match="psnr must be a number"):
        ndf.convert(rgb, tmp_path / "o-bad", psnr="high", **quick)
