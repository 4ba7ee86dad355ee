"""The model zoo: every shipped base is the published file, loads by name, says how it was trained,
and keeps decoding its golden record to the same latents and pixels (and encoding to the same bytes).

Regenerate (only when a zoo file is deliberately replaced) with::

    GENERATE_EXPECTED=1 python -m pytest tests/test_zoo.py

``expected/zoo/v1/`` keeps each base's golden record as version 1 of the compact record wrote it
(the stream's words little-endian, the coder's own seal), ``expected/zoo/v2/`` as version 2 did
(a base-tag byte after the tag); those files are never regenerated: they must keep decoding, to
the same latents as the current encoder's record of the same input.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import ndf_datasets as ndf
from ndf_datasets.codec.zoo import ZOO, zoo_names, zoo_path

from .conftest import make_image

EXPECTED = Path(__file__).parent / "expected" / "zoo"
EXPECTED_V1 = EXPECTED / "v1"
EXPECTED_V2 = EXPECTED / "v2"
MAX_ZOO_BYTES = 2 * 1024 * 1024


def _digit() -> np.ndarray:
    yy, xx = np.mgrid[0:28, 0:28]
    d = np.abs(np.hypot(yy - 13.5, xx - 14.5) - 7.5)
    return np.clip(255 * (1.8 - d), 0, 255).round().astype(np.uint8)


#: name -> (golden input, level, label)
GOLDEN = {
    "cifar10": (lambda: make_image(32, 32, 3, seed=7), 30, 3),
    "cifar10-wide": (lambda: make_image(32, 32, 3, seed=7), 30, 3),
    "mnist": (_digit, 6, 0),
    "natural": (lambda: make_image(40, 56, 3, seed=8), 20, None),
}


def _encode(name: str) -> bytes:
    make, level, label = GOLDEN[name]
    return ndf.encode(make(), base=name, level=level, label=label)


def _fingerprint(name: str, blob: bytes) -> dict:
    from ndf_datasets.codec.record import parse_record

    base = ndf.load_base(name)
    rec = parse_record(blob)
    arch = base.arch_for(*rec.size) if rec.size else base.arch  # a record of another size than the base's
    exact = arch.exact_latents(base.weights_on("cpu"), [rec.level], [rec.payload])
    latents = {"exact": hashlib.sha256(exact.double().numpy().tobytes()).hexdigest()}
    pixels = (ndf.decode(blob, base=base) * 255).round().byte().numpy().ravel().tolist()
    return {"latents": latents, "pixels": pixels}


def _expected(name: str) -> dict:
    meta_file, rec_file = EXPECTED / f"{name}.json", EXPECTED / f"{name}.ndf"
    if os.environ.get("GENERATE_EXPECTED") == "1":
        EXPECTED.mkdir(parents=True, exist_ok=True)
        blob = _encode(name)
        rec_file.write_bytes(blob)
        digest = hashlib.sha256(Path(zoo_path(name)).read_bytes()).hexdigest()
        meta_file.write_text(json.dumps({"base_sha256": digest, "record_sha256": hashlib.sha256(blob).hexdigest(), **_fingerprint(name, blob)}))
    if not meta_file.exists():
        raise RuntimeError(f"golden files for zoo base {name!r} missing in {EXPECTED}; run with GENERATE_EXPECTED=1")
    return {**json.loads(meta_file.read_text()), "record": rec_file.read_bytes()}


SHIPPED = [n for n in ZOO if n in zoo_names()]


def test_the_zoo_ships_cifar10_and_mnist():
    assert {"cifar10", "mnist"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_zoo_file_is_the_published_one(name):
    data = Path(zoo_path(name)).read_bytes()
    assert len(data) <= MAX_ZOO_BYTES
    assert hashlib.sha256(data).hexdigest() == _expected(name)["base_sha256"], (
        f"zoo/{ZOO[name]} changed; if deliberate, regenerate with GENERATE_EXPECTED=1"
    )
    base = ndf.load_base(name)
    assert base is ndf.load_base(name)  # loaded once per process
    meta = base.metadata
    assert meta["data"] and meta["settings"]["arch"] == base.arch.name and meta["train_steps_done"] > 0


@pytest.mark.parametrize("name", SHIPPED)
def test_golden_record_decodes_to_the_same_latents_and_pixels(name):
    exp = _expected(name)
    got = _fingerprint(name, exp["record"])
    assert got["latents"] == exp["latents"]  # the entropy decoding is exact
    assert np.abs(np.array(got["pixels"]) - np.array(exp["pixels"])).max() <= 1


@pytest.mark.parametrize("name", SHIPPED)
def test_version_1_records_keep_decoding_to_the_same_symbols(name):
    blob = (EXPECTED_V1 / f"{name}.ndf").read_bytes()
    assert blob[0] == 0xC1
    old = json.loads((EXPECTED_V1 / f"{name}.json").read_text())
    got = _fingerprint(name, blob)
    assert got["latents"] == old["latents"]
    assert np.abs(np.array(got["pixels"]) - np.array(old["pixels"])).max() <= 1
    new = _expected(name)["record"]  # the same input, level and label, written as version 3
    assert new[0] == 0xC3 and len(new) < len(blob)  # version 2 terminated the stream in fewer bytes, version 3 has no tag
    assert _fingerprint(name, new)["latents"] == old["latents"]  # only the container and the stream's end differ


@pytest.mark.parametrize("name", SHIPPED)
def test_version_2_records_keep_decoding_and_differ_only_by_the_base_tag(name):
    blob = (EXPECTED_V2 / f"{name}.ndf").read_bytes()
    base = ndf.load_base(name)
    assert blob[0] == 0xC2 and blob[1] == base.hash[0]
    old = json.loads((EXPECTED_V2 / f"{name}.json").read_text())
    got = _fingerprint(name, blob)
    assert got["latents"] == old["latents"]
    assert np.abs(np.array(got["pixels"]) - np.array(old["pixels"])).max() <= 1
    new = _expected(name)["record"]  # the same input, level and label, written as version 3
    assert len(new) == len(blob) - 1 and new[1:-4] == blob[2:-4]  # the same level byte, label, size and stream


@pytest.mark.parametrize("name", SHIPPED)
def test_encoder_bytes_are_unchanged(name):
    if hashlib.sha256(_encode(name)).hexdigest() != _expected(name)["record_sha256"]:
        pytest.fail(f"encoding the golden input with zoo base {name!r} changed its bytes; if intended, regenerate")


def test_zoo_names_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a base file nor a zoo base"):
        ndf.load_base("not-a-zoo-name-or-file")
    x = torch.from_numpy(make_image(32, 32, 3, seed=9)).permute(2, 0, 1).float() / 255
    blob = ndf.encode(x, base="cifar10", psnr=30.0)
    assert ndf.decode(blob, base="cifar10").shape == (3, 32, 32)
    assert float(((ndf.decode(blob, base=ndf.load_base("cifar10")) - x) ** 2).mean()) <= 10 ** (-30 / 10)
