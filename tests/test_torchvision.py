"""torchvision adapter: NDFImageFolder over a tiny tree of real .ndf files (no mocks)."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

import ndf_datasets as ndf

tv = pytest.importorskip("ndf_datasets.integrations.torchvision")
from torchvision.datasets import DatasetFolder

from .conftest import make_image

CLASSES = ("cat", "dog")
PER_CLASS = 3
SIDE = 16


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def images():
    return [make_image(SIDE, SIDE, 3, seed=i) for i in range(len(CLASSES) * PER_CLASS)]


def _write_tree(root: Path, blobs: list[bytes]) -> Path:
    for i, blob in enumerate(blobs):
        d = root / CLASSES[i // PER_CLASS]
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:03d}.ndf").write_bytes(blob)
    return root


@pytest.fixture(scope="module")
def field_root(tmp_path_factory, images):
    """Standalone fields: root/{cat,dog}/00i.ndf."""
    blobs = ndf.encode_batch(images, psnr=20, steps=30)
    return _write_tree(tmp_path_factory.mktemp("fields"), blobs)


@pytest.fixture(scope="module")
def base(images):
    return ndf.fit_base(images, epochs=1, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def record_root(tmp_path_factory, images, base):
    """Records of a shared base, the base saved as root/<hash hex>.ndfbase."""
    root = tmp_path_factory.mktemp("records")
    base.save(root / ndf.base_filename(base.hash))
    return _write_tree(root, ndf.encode_batch(images, base=base, psnr=None, steps=20))


@pytest.fixture
def fresh_cache():
    ndf.clear_base_cache()
    yield
    ndf.clear_base_cache()


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "copy"))


def _truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


class CatsOnly(tv.NDFImageFolder):
    """A user override of find_classes (module level so spawn workers could pickle it)."""

    def find_classes(self, directory):
        return ["cat"], {"cat": 0}


def _per_item(ds) -> torch.Tensor:
    return torch.stack([ds[i][0] for i in range(len(ds))])


# ----------------------------------------------------------------------------- folder contract


def test_is_a_dataset_folder_with_classes_and_targets(field_root):
    ds = tv.NDFImageFolder(field_root, size=8)
    assert isinstance(ds, DatasetFolder)
    assert ds.classes == list(CLASSES) and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert len(ds) == 6 and ds.targets == [0, 0, 0, 1, 1, 1]
    assert [Path(p).name for p, _ in ds.samples] == [f"{i:03d}.ndf" for i in range(6)]
    assert ds.imgs is ds.samples
    x, y = ds[4]
    assert y == 1 and x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert "Size: 8" in repr(ds) and "Number of datapoints: 6" in repr(ds)


def test_find_classes_override_still_works(field_root):
    ds = CatsOnly(field_root, size=8)
    assert ds.classes == ["cat"] and len(ds) == 3 and set(ds.targets) == {0}


def test_is_valid_file_and_allow_empty(field_root, tmp_path):
    ds = tv.NDFImageFolder(field_root, size=8, is_valid_file=lambda p: p.endswith("000.ndf"), allow_empty=True)
    assert len(ds) == 1
    root = _copy(field_root, tmp_path)
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*Supported extensions are: .ndf"):
        tv.NDFImageFolder(root)
    assert len(tv.NDFImageFolder(root, allow_empty=True).classes) == 3


@pytest.mark.parametrize("size, shape", [(8, (8, 8)), ((6, 12), (6, 12)), (None, (SIDE, SIDE)), (32, (32, 32))])
def test_size_int_tuple_none_through_the_core(field_root, size, shape):
    ds = tv.NDFImageFolder(field_root, size=size)
    x, _ = ds[2]
    assert x.shape == (3, *shape)
    blob = Path(ds.samples[2][0]).read_bytes()
    assert torch.equal(x, ndf.decode(blob, size=size))


def test_bad_options_fail_at_construction(field_root):
    with pytest.raises(ValueError, match="size"):
        tv.NDFImageFolder(field_root, size=(8,))
    with pytest.raises(ValueError, match="on_error"):
        tv.NDFImageFolder(field_root, on_error="ignore")
    with pytest.raises(ValueError, match="deferred"):
        tv.NDFImageFolder(field_root, transform=torch.flip, deferred=True)


def test_transform_and_target_transform(field_root):
    ds = tv.NDFImageFolder(
        field_root, size=8, transform=lambda x: x.flip(-1), target_transform=lambda y: CLASSES[y].upper()
    )
    plain = tv.NDFImageFolder(field_root, size=8)
    x, y = ds[3]
    assert y == "DOG" and torch.equal(x, plain[3][0].flip(-1))


# ----------------------------------------------------------------------------- shared bases


def test_records_find_their_base_by_hash_in_root(record_root, base, fresh_cache):
    ds = tv.NDFImageFolder(record_root, size=12)
    x, y = ds[0]
    assert x.shape == (3, 12, 12) and y == 0
    blob = Path(ds.samples[0][0]).read_bytes()
    assert torch.equal(x, ndf.decode(blob, base=base, size=12))
    # loaded once per process, cached by content hash
    assert ndf.resolve_base(base.hash, []) is ndf.resolve_base(base.hash, [record_root])


def test_base_as_object_or_path_gives_the_same_pixels(record_root, base, fresh_cache):
    auto = _per_item(tv.NDFImageFolder(record_root, size=8))
    by_obj = _per_item(tv.NDFImageFolder(record_root, size=8, base=base))
    by_path = _per_item(tv.NDFImageFolder(record_root, size=8, base=record_root / ndf.base_filename(base.hash)))
    assert torch.equal(auto, by_obj) and torch.equal(auto, by_path)


def test_missing_base_names_hash_and_where_it_looked(record_root, base, tmp_path, fresh_cache):
    root = _copy(record_root, tmp_path)
    (root / ndf.base_filename(base.hash)).unlink()
    for on_error in ("raise", "skip"):  # a missing base is a setup error: never skipped
        ds = tv.NDFImageFolder(root, size=8, on_error=on_error)
        with pytest.raises(ndf.NDFBaseError) as info:
            ds[0]
        msg = str(info.value)
        assert base.hash.hex() in msg and str(root) in msg and ds.samples[0][0] in msg
    with pytest.raises(FileNotFoundError):
        tv.NDFImageFolder(root, base=root / "nope.ndfbase")


def test_wrong_base_object_is_refused(record_root, images):
    other = ndf.fit_base(images[:2], epochs=1, batch_size=8, progress=False, seed=1)
    with pytest.raises(ndf.NDFBaseError, match=other.hash.hex()):
        tv.NDFImageFolder(record_root, size=8, base=other)[0]


# ----------------------------------------------------------------------------- deferred decoding


@pytest.mark.parametrize("which", ["field_root", "record_root"])
def test_deferred_batch_equals_per_item_pixels(request, which):
    root = request.getfixturevalue(which)
    per_item = _per_item(tv.NDFImageFolder(root, size=(8, 12)))
    ds = tv.NDFImageFolder(root, size=(8, 12), deferred=True)
    item, target = ds[1]
    assert isinstance(item, tv.NDFItem) and target == 0
    assert all(t.device.type == "cpu" for t in item.latents.values())
    if which == "record_root":
        base = request.getfixturevalue("base")
        assert item.weights is None and item.base.hash == base.hash and item.base.dirs == (str(root),)
        assert b"SharedBase" not in pickle.dumps(item)  # the base travels by reference only
    else:
        assert item.base is None and item.weights
    batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=tv.ndf_collate)))
    assert isinstance(batch, tv.NDFBatch) and len(batch) == 6 and batch.skipped == 0
    assert len(batch.groups) == 1  # one architecture: one forward pass
    assert torch.equal(batch.targets, torch.tensor(ds.targets))
    out = batch.decode()
    assert out.shape == (6, 3, 8, 12)
    torch.testing.assert_close(out, per_item, rtol=0, atol=1e-6)
    torch.testing.assert_close(ds.decoder()(batch), per_item, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch.to("cpu").decode(device="cpu"), per_item, rtol=0, atol=1e-6)
    # another size at decode time, same pixels as the per-item path at that size
    other = _per_item(tv.NDFImageFolder(root, size=None))
    torch.testing.assert_close(tv.NDFDecoder(size=None)(batch), other, rtol=0, atol=1e-6)


def test_deferred_batch_of_mixed_sizes_keeps_batch_order(record_root, base, tmp_path):
    root = _copy(record_root, tmp_path)
    odd = ndf.encode_batch([make_image(12, 20, 3, seed=9)], base=base, psnr=None, steps=20)[0]
    (root / "cat" / "001b.ndf").write_bytes(odd)  # sorts between two 16x16 records
    ds = tv.NDFImageFolder(root, size=(8, 10), deferred=True)
    batch = tv.ndf_collate([ds[i] for i in range(len(ds))])
    assert len(batch) == 7 and len(batch.groups) == 2 and Path(batch.sources[2]).name == "001b.ndf"
    expected = _per_item(tv.NDFImageFolder(root, size=(8, 10)))
    torch.testing.assert_close(batch.decode(), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="explicit size"):
        batch.decode(size=None)


def test_unreadable_base_is_a_base_error_even_when_skipping(record_root, base, tmp_path, fresh_cache):
    root = _copy(record_root, tmp_path)
    _truncate(root / ndf.base_filename(base.hash))
    ds = tv.NDFImageFolder(root, size=8, on_error="skip")
    with pytest.raises(ndf.NDFBaseError, match=base.hash.hex()) as info:
        ds[0]
    assert ds.samples[0][0] in str(info.value) and ds.error_count == 0


def test_deferred_in_memory_base_needs_the_decoder_to_know_it(record_root, base, tmp_path, fresh_cache):
    root = _copy(record_root, tmp_path)
    (root / ndf.base_filename(base.hash)).unlink()
    ds = tv.NDFImageFolder(root, size=8, base=base, deferred=True)
    batch = tv.ndf_collate([ds[i] for i in range(len(ds))])
    with pytest.raises(ndf.NDFBaseError, match=base.hash.hex()):
        batch.decode()
    expected = _per_item(tv.NDFImageFolder(root, size=8, base=base))
    torch.testing.assert_close(ds.decoder()(batch), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch.decode(base=base), expected, rtol=0, atol=1e-6)


def test_decoder_is_a_module_and_follows_to(field_root):
    dec = tv.NDFDecoder(size=8)
    assert isinstance(dec, torch.nn.Module) and "size=8" in repr(dec)
    assert dec.to("cpu") is dec and dec.state_dict() == {}
    ds = tv.NDFImageFolder(field_root, deferred=True)
    out = dec(tv.ndf_collate([ds[0], ds[5]]))
    assert out.shape == (2, 3, 8, 8) and out.device.type == "cpu"


# ----------------------------------------------------------------------------- DataLoader machinery


@pytest.mark.parametrize("context", [None, pytest.param("spawn", marks=pytest.mark.slow)])
def test_workers_fork_and_spawn(record_root, context):
    expected = _per_item(tv.NDFImageFolder(record_root, size=8))
    ds = tv.NDFImageFolder(record_root, size=8, deferred=True)
    loader = DataLoader(
        ds, batch_size=2, num_workers=2, collate_fn=tv.ndf_collate, multiprocessing_context=context, timeout=60
    )
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2, 2]
    torch.testing.assert_close(torch.cat([b.decode() for b in batches]), expected, rtol=0, atol=1e-6)
    assert torch.cat([b.targets for b in batches]).tolist() == ds.targets


def test_workers_without_deferral_use_default_collate(field_root):
    ds = tv.NDFImageFolder(field_root, size=8)
    x, y = next(iter(DataLoader(ds, batch_size=6, num_workers=2, timeout=60)))
    assert torch.equal(x, _per_item(ds)) and y.tolist() == ds.targets


def test_pin_memory(field_root):
    ds = tv.NDFImageFolder(field_root, size=8, deferred=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPU-only torch: "no accelerator is found", pinning is a no-op
        batch = next(iter(DataLoader(ds, batch_size=6, collate_fn=tv.ndf_collate, pin_memory=True)))
    expected = _per_item(tv.NDFImageFolder(field_root, size=8))
    torch.testing.assert_close(batch.decode(device="cpu"), expected, rtol=0, atol=1e-6)
    if not torch.cuda.is_available():
        pytest.skip("pinning page-locked memory needs CUDA; DataLoader(pin_memory=True) checked as a no-op")
    pinned = batch.pin_memory()
    assert all(t.is_pinned() for g in pinned.groups for t in g.tensors()) and pinned.targets.is_pinned()
    on_gpu = pinned.to("cuda", non_blocking=True)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.decode().cpu(), expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(ds.decoder().to("cuda")(batch).cpu(), expected, rtol=0, atol=1e-4)


def test_distributed_sampler_ranks_partition_the_dataset(field_root):
    ds = tv.NDFImageFolder(field_root, size=8, deferred=True)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        idx = list(sampler)
        assert len(idx) == 3
        batch = next(iter(DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=tv.ndf_collate)))
        assert batch.targets.tolist() == [ds.targets[i] for i in idx]
        assert batch.sources == [ds.samples[i][0] for i in idx]
        seen.append(set(idx))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(len(ds)))


# ----------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("which", ["field_root", "record_root"])
def test_corrupt_file_raises_ndf_error_naming_the_path(request, tmp_path, which):
    root = _copy(request.getfixturevalue(which), tmp_path)
    ds = tv.NDFImageFolder(root, size=8)
    bad = ds.samples[4][0]
    _truncate(bad)
    with pytest.raises(ndf.NDFError, match=bad):
        ds[4]
    # raised inside a worker: re-raised in the main process, nothing hangs
    with pytest.raises(ndf.NDFError, match=bad):
        list(DataLoader(ds, batch_size=2, num_workers=2, timeout=60))
    Path(ds.samples[1][0]).write_bytes(b"not an ndf file at all")
    with pytest.raises(ndf.NDFFormatError, match=ds.samples[1][0]):
        tv.NDFImageFolder(root, size=8, deferred=True)[1]


@pytest.mark.parametrize("deferred", [False, True])
def test_skip_mode_drops_and_counts_bad_samples(field_root, tmp_path, deferred):
    root = _copy(field_root, tmp_path)
    ds = tv.NDFImageFolder(root, size=8, deferred=deferred, on_error="skip")
    bad = [ds.samples[1][0], ds.samples[4][0]]
    _truncate(bad[0])
    Path(bad[1]).write_bytes(b"")
    assert ds[1] is None and ds[4] is None and ds[0] is not None
    assert ds.error_count == 2 and [p for p, _ in ds.errors] == bad
    assert len(ds) == 6  # map-style: length unchanged, ndf_collate drops the Nones
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=tv.ndf_collate, timeout=60 * (workers > 0))
        batches = list(loader)
        assert [b.skipped for b in batches] == [1, 1]
        if deferred:
            assert [len(b) for b in batches] == [2, 2]
            targets = torch.cat([b.targets for b in batches]).tolist()
            assert batches[0].decode().shape == (2, 3, 8, 8)
        else:
            xs, targets = zip(*batches)
            assert [x.shape for x in xs] == [(2, 3, 8, 8)] * 2
            targets = torch.cat(targets).tolist()
        assert targets == [0, 0, 1, 1]


def test_collate_of_an_all_skipped_batch_is_empty():
    decoded = tv.ndf_collate([None, None])
    assert decoded.skipped == 2 and decoded[0].numel() == 0
    _, y = decoded
    assert len(y) == 0


# ----------------------------------------------------------------------------- batched reads (__getitems__)


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory, images):
    """Records of the shipped cifar10 base (compact records, a learned entropy model)."""
    root = tmp_path_factory.mktemp("zoo")
    zoo = ndf.load_base("cifar10")
    zoo.save(root / ndf.base_filename(zoo.hash))
    return _write_tree(root, [ndf.encode(im, base=zoo, level=3) for im in images])


def test_records_of_several_bases_in_one_folder_each_find_their_own(images, tmp_path, fresh_cache):
    """Compact records (version 3) do not name their base: with two bases in the root, each
    record's CRC picks its own (from the files first, then from the process's cache)."""
    bases = [ndf.load_base("cifar10"), ndf.load_base("cifar10-wide")]
    blobs = [ndf.encode(im, base=bases[i % 2], level=3) for i, im in enumerate(images)]
    root = _write_tree(tmp_path / "mixed", blobs)
    for b in bases:
        b.save(root / ndf.base_filename(b.hash))
    want = torch.stack([ndf.decode(blob, size=8, base=bases[i % 2]) for i, blob in enumerate(blobs)])
    ndf.clear_base_cache()
    assert torch.equal(_per_item(tv.NDFImageFolder(root, size=8)), want)
    (root / ndf.base_filename(bases[1].hash)).unlink()
    ndf.clear_base_cache()
    ds = tv.NDFImageFolder(root, size=8)
    assert torch.equal(ds[0][0], want[0])
    with pytest.raises(ndf.NDFChecksumError, match=bases[0].hash.hex()):  # its base is gone: never the other's pixels
        ds[1]


@pytest.mark.parametrize("deferred", [False, True])
def test_getitems_decodes_a_batch_at_once_with_the_same_samples(zoo_root, deferred, monkeypatch):
    ds = tv.NDFImageFolder(zoo_root, size=16, deferred=deferred)
    single = [ds[i] for i in range(len(ds))]
    from ndf_datasets.integrations.torchvision import folder

    calls = []
    monkeypatch.setattr(folder, "read_field", lambda *a, **k: calls.append(a) or ndf.read_field(*a, **k))
    batch = ds.__getitems__([4, 0, 5, 1])
    assert calls == []  # one read_fields call for the batch, no per-item reads
    for (x, t), i in zip(batch, [4, 0, 5, 1]):
        assert t == single[i][1]
        if deferred:
            for k, v in x.latents.items():  # exact latents + the float residual prediction (batch-size rounding)
                torch.testing.assert_close(v, single[i][0].latents[k], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(x, single[i][0], atol=1e-5, rtol=0)
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=tv.ndf_collate if deferred else None)
    got = torch.cat([ds.decoder()(b) if deferred else b[0] for b in loader])
    torch.testing.assert_close(got, _per_item(ds) if not deferred else torch.stack([ds.decoder()(tv.ndf_collate([s]))[0] for s in single]), atol=1e-5, rtol=0)


def test_getitems_with_a_bad_file_behaves_as_item_by_item(zoo_root, tmp_path):
    root = _copy(zoo_root, tmp_path)
    bad = sorted(root.glob("dog/*.ndf"))[0]
    _truncate(str(bad))
    with pytest.raises(ndf.NDFError, match=bad.name):
        tv.NDFImageFolder(root, size=16).__getitems__(list(range(6)))
    ds = tv.NDFImageFolder(root, size=16, on_error="skip")
    out = ds.__getitems__(list(range(6)))
    assert [o is None for o in out] == [False, False, False, True, False, False]
    assert ds.error_count == 1 and bad.name in ds.errors[0][0]


class Tagged(tv.NDFImageFolder):
    """A user override of __getitem__ (the batched path must not bypass it)."""

    def __getitem__(self, index):
        image, target = super().__getitem__(index)
        return image, (target, index)


def test_getitems_honours_an_overridden_getitem(zoo_root):
    ds = Tagged(zoo_root, size=16)
    assert [t for _, t in ds.__getitems__([2, 3])] == [(0, 2), (1, 3)]
