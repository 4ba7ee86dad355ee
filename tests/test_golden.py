"""Golden files: a checked-in reference ``.ndf`` must keep decoding to the same pixels, and
the encoder must keep producing the same bytes for the same input and seed.

Regenerate (only when a change of the bytes is intended, e.g. a new format version) with::

    GENERATE_EXPECTED=1 python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import ndf_datasets as ndf

from .conftest import make_image

EXPECTED = Path(__file__).parent / "expected"
NDF_FILE, META_FILE = EXPECTED / "tiny.ndf", EXPECTED / "tiny.json"


def _encode() -> bytes:
    return ndf.encode(make_image(12, 16, 3, seed=42), psnr=24.0, steps=60, seed=0, label=5, metadata={"golden": True})


def _pixels(blob: bytes) -> np.ndarray:
    return (ndf.decode(blob) * 255).round().byte().permute(1, 2, 0).numpy()


def _expected() -> tuple[bytes, dict]:
    if os.environ.get("GENERATE_EXPECTED") == "1":
        blob = _encode()
        EXPECTED.mkdir(exist_ok=True)
        NDF_FILE.write_bytes(blob)
        META_FILE.write_text(json.dumps({"md5": hashlib.md5(blob).hexdigest(), "pixels": _pixels(blob).ravel().tolist()}))
    if not NDF_FILE.exists() or not META_FILE.exists():
        raise RuntimeError(f"golden files missing in {EXPECTED}; run with GENERATE_EXPECTED=1")
    return NDF_FILE.read_bytes(), json.loads(META_FILE.read_text())


def test_reference_file_decodes_to_the_same_pixels():
    blob, meta = _expected()
    info = ndf.inspect(blob)
    assert (info["version"], info["kind"], info["label"], info["metadata"]) == (1, "field", 5, {"golden": True})
    got = _pixels(blob).ravel().astype(int)
    assert np.abs(got - np.array(meta["pixels"])).max() <= 1


def test_encoder_output_is_unchanged():
    blob, meta = _expected()
    fresh = _encode()
    if hashlib.md5(fresh).hexdigest() != meta["md5"]:
        pytest.fail(
            "the encoder's bytes changed for the golden input; if intended, regenerate with "
            "GENERATE_EXPECTED=1 (and bump the format version if old files no longer decode)"
        )
