"""No code execution on read, anywhere: a source audit plus hostile shards through every adapter.

1. An AST audit of the package source: no ``pickle``/``marshal``/``dill``/``shelve`` use, no
   ``eval``/``exec``/``compile``/``__import__``, no ``torch.load`` without
   ``weights_only=True``, no ``numpy.load(allow_pickle=True)``, no ``os.system``/``subprocess``,
   no dynamic ``import_module`` -- except the allow-listed, reasoned uses below (the list is
   checked both ways: a new use fails, and so does an entry that no longer matches anything).
2. Malicious ``.pyd`` / ``.pickle`` / ``.pth`` members whose unpickling would create a marker
   file sit in a WebDataset shard next to valid ``.ndf`` members. They are read through
   ``.decode(ndf_decoder(...))``, ``.decode(ndf_read(...))``, ``.map(ndf_samples(...))`` and
   the HF shard reader with an audit hook watching for ``pickle.find_class``,
   ``marshal.loads``, ``os.system`` and process creation: no event, no marker. A control run
   of WebDataset's own ``.decode()`` on the same shard does create the marker, so the
   payloads are live and the test can fail.
"""

from __future__ import annotations

import ast
import io
import pickle
import sys
from pathlib import Path

import pytest
import torch
import webdataset as wds
from ndf_datasets.integrations.webdataset import CODE_EXTENSIONS, ndf_batch_decode, ndf_decoder, ndf_read, ndf_samples

import ndf_datasets as ndf

from .conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("ndf_datasets", "integrations")

#: (file, finding) -> why it is not code execution on a read path.
ALLOWED: dict[tuple[str, str], str] = {
    ("ndf_datasets/data/sources/unpickle.py", "import pickle"): (
        "ndf convert reads the CIFAR-10 *python* raw copy (pickled batches) with RestrictedUnpickler, "
        "whose find_class maps only numpy's array/dtype rebuilders to checked local functions; "
        "conversion input, never a .ndf read path (tests/test_sources.py covers hostile pickles)"
    ),
    ("ndf_datasets/_hooks.py", "importlib.import_module(<dynamic>)"): (
        "imports the adapter named by the package's own constant when_imported(...) calls, and the new "
        "module path of an old one from the package's own constant _MOVED table (both in "
        "ndf_datasets/__init__.py); never a name taken from data"
    ),
}

_BANNED_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "subprocess"}
_BANNED_BUILTINS = {"eval", "exec", "compile", "__import__", "breakpoint"}
_BANNED_ATTR_CALLS = {("os", "system"), ("os", "popen"), ("os", "execv"), ("os", "execve"), ("os", "spawnv")}


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return "<expr>"


def _kw_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def audit_source(path: Path) -> list[str]:
    """The code-execution-capable constructs used in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in _BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _BANNED_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _name(node.func)
            last = tuple(name.rsplit(".", 2)[-2:]) if "." in name else ("", name)
            if isinstance(node.func, ast.Name) and node.func.id in _BANNED_BUILTINS:
                found.append(f"{node.func.id}()")
            elif last in _BANNED_ATTR_CALLS:
                found.append(f"{name}()")
            elif name.endswith("torch.load") and not _kw_true(node, "weights_only"):
                found.append("torch.load() without weights_only=True")
            elif name in ("np.load", "numpy.load") and _kw_true(node, "allow_pickle"):
                found.append("numpy.load(allow_pickle=True)")
            elif name.endswith("import_module") and not (node.args and isinstance(node.args[0], ast.Constant)):
                found.append("importlib.import_module(<dynamic>)")
    return found


def _package_findings() -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for finding in audit_source(path):
                key = (path.relative_to(ROOT).as_posix(), finding)
                out[key] = out.get(key, 0) + 1
    return out


def test_audit_catches_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, torch, numpy as np, importlib, os\n"
        "pickle.loads(b'')\neval('1')\ntorch.load('x')\ntorch.load('x', weights_only=True)\n"
        "np.load('x', allow_pickle=True)\nimportlib.import_module(name)\nos.system('true')\n"
    )
    assert audit_source(bad) == [
        "import pickle",
        "eval()",
        "torch.load() without weights_only=True",
        "numpy.load(allow_pickle=True)",
        "importlib.import_module(<dynamic>)",
        "os.system()",
    ]


def test_package_source_has_no_code_execution_on_read_paths():
    findings = _package_findings()
    unexpected = sorted(set(findings) - set(ALLOWED))
    assert not unexpected, f"code-execution-capable constructs outside the allow-list: {unexpected}"
    stale = sorted(set(ALLOWED) - set(findings))
    assert not stale, f"allow-list entries that match nothing any more (remove them): {stale}"


# ----------------------------------------------------------------------------- hostile shards


class _Marker:
    """Unpickling this creates ``path`` (``open(path, "w")``): proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


_WATCHED = ("pickle.find_class", "marshal.loads", "marshal.load", "os.system", "subprocess.Popen", "os.posix_spawn", "os.exec")
_events: list[str] = []
_hook_on = [False]


def _audit(event: str, args: tuple) -> None:
    if _hook_on[0] and event.startswith(_WATCHED):
        _events.append(f"{event} {args!r:.120}")


sys.addaudithook(_audit)  # hooks can not be removed; this one records only while _hook_on[0]


class _Watch:
    def __enter__(self) -> list[str]:
        _events.clear()
        _hook_on[0] = True
        return _events

    def __exit__(self, *exc) -> None:
        _hook_on[0] = False


@pytest.fixture(scope="module")
def hostile_shard(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "EXECUTED"
    blobs = ndf.encode_batch([make_image(8, 8, 3, seed=i) for i in range(3)], psnr=None, steps=5)
    pth = io.BytesIO()
    torch.save({"w": _Marker(marker)}, pth)
    url = str(root / "train-000000.tar")
    with wds.TarWriter(url) as sink:
        for i, blob in enumerate(blobs):
            sink.write(
                {
                    "__key__": f"{i:06d}",
                    "ndf": blob,
                    "cls": str(i).encode(),
                    "pyd": pickle.dumps(_Marker(marker)),
                    "pickle": pickle.dumps(_Marker(marker)),
                    "pkl": pickle.dumps(_Marker(marker)),
                    "pth": pth.getvalue(),
                }
            )
    return url, marker, blobs


def _pipelines(url: str):
    yield "decode(ndf_decoder)", wds.WebDataset(url, shardshuffle=False).decode(ndf_decoder(size=8))
    yield "decode(ndf_decoder, 'pil')", wds.WebDataset(url, shardshuffle=False).decode(ndf_decoder(size=8), "pil")
    yield "decode('torch', ndf_read)", wds.WebDataset(url, shardshuffle=False).decode("torch", ndf_read())
    yield "map(ndf_samples)", wds.WebDataset(url, shardshuffle=False).map(ndf_samples(ndf_decoder(size=8)))
    yield (
        "batched",
        wds.WebDataset(url, shardshuffle=False).decode(ndf_read()).to_tuple("ndf", "pyd").batched(2).map(ndf_batch_decode(8)),
    )


def test_malicious_members_are_not_executed_by_our_handlers(hostile_shard):
    url, marker, blobs = hostile_shard
    expected = ndf.decode_batch(blobs, size=8)
    for name, pipeline in _pipelines(url):
        with _Watch() as events:
            samples = list(pipeline)
        assert not marker.exists(), f"{name}: a pickle member was executed"
        assert events == [], f"{name}: {events}"
        if name == "batched":
            torch.testing.assert_close(torch.cat([b[0] for b in samples]), expected, rtol=0, atol=1e-6)
            assert all(isinstance(p, bytes) for b in samples for p in b[1])
            continue
        assert len(samples) == 3
        for i, sample in enumerate(samples):
            for ext in CODE_EXTENSIONS:
                assert isinstance(sample[ext], bytes), (name, ext, type(sample[ext]))
            if name.startswith("decode('torch'"):
                continue
            torch.testing.assert_close(sample["ndf"], expected[i], rtol=0, atol=1e-6)


def test_hf_shard_reader_never_unpickles(hostile_shard):
    import datasets

    url, marker, blobs = hostile_shard
    base_dir = Path(url).parent
    (base_dir / "ndf_dataset.json").write_text('{"format": "ndf-webdataset"}')
    with _Watch() as events:
        ds = datasets.load_dataset(str(base_dir), split="train", streaming=True)
        rows = list(ds)
    assert not marker.exists() and events == []
    assert len(rows) == 3
    torch.testing.assert_close(torch.stack([r["image"] for r in rows]), ndf.decode_batch(blobs, size=None), rtol=0, atol=1e-6)


def test_control_webdataset_default_decoders_do_execute(hostile_shard, tmp_path):
    """The same shard through WebDataset's own default decoders runs the payload: the
    hostile members are real, so the tests above can fail."""
    url, marker, _ = hostile_shard
    with _Watch() as events:
        next(iter(wds.WebDataset(url, shardshuffle=False).decode()))
    assert marker.exists() and any(e.startswith("pickle.find_class") for e in events)
    marker.unlink()
    with _Watch() as events:
        next(iter(wds.WebDataset(url, shardshuffle=False).decode(ndf_decoder(size=8, allow_code=True))))
    assert marker.exists(), "allow_code=True hands the members back to WebDataset"
    marker.unlink()
