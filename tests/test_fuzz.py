"""The CI-sized fuzz run and the regression inputs the long run (benchmarks/fuzz.py) found.

The long run (``python -m benchmarks.fuzz --runs 1000000``) and its figures are in
RELIABILITY.md; here the same target and mutator run for a few thousand inputs, and every
input that once crashed or hung the reader is replayed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import ndf_datasets as ndf
from benchmarks.fuzz import run_random
from benchmarks.fuzzlib import CORPUS, fuzz_limits, load_corpus, target
from ndf_datasets.codec import format as fmt
from ndf_datasets.codec.coding import TensorCode, pack_codes
from ndf_datasets.codec.decoding import MAX_SUPERSAMPLE, read_field, render_fields
from ndf_datasets.codec.fields import get_arch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seeds():
    return load_corpus()


def test_every_seed_is_a_valid_file(seeds):
    resolve = seeds.resolver()
    with fuzz_limits():
        outcomes = {name: target(blob, resolve) for name, blob in seeds.files.items()}
    assert all(o.startswith("ok:") for o in outcomes.values()), outcomes
    assert {o.split(":")[1] for o in outcomes.values()} == {"field", "record", "base"}


@pytest.mark.parametrize("path", sorted((CORPUS / "regressions").iterdir()), ids=lambda p: p.name)
@pytest.mark.parametrize("profile", ["fuzz", "default"])
def test_regression_inputs(seeds, path, profile):
    """Inputs that once crashed or stalled: an NDFError or a valid image now, quickly under the fuzz profile."""
    resolve = seeds.resolver()
    with fuzz_limits(None if profile == "fuzz" else {}):
        t0 = time.perf_counter()
        outcome = target(path.read_bytes(), resolve)  # raises on anything but an NDFError
        elapsed = time.perf_counter() - t0
    assert outcome.startswith("NDF") or outcome.startswith("ok:")
    if profile == "fuzz":
        assert elapsed < 1.0


def _hostile_field(height: int, width: int, config: tuple[int, ...], arch_id: int = 1) -> bytes:
    """A tiny standalone field whose tensors all cost no bits (lo == hi): the header alone
    decides how much work decoding it takes."""
    arch = get_arch(arch_id)(config, height, width, 3)
    codes = [TensorCode(1.0, 0.0, 1.0, 0, 0)] * len(arch.tensor_specs())
    return fmt.write(
        fmt.Container(kind=1, arch=arch_id, colorspace=1, height=height, width=width, config=config, payload=pack_codes(codes))
    )


def test_small_decode_of_a_huge_declared_field_is_cheap():
    """Regression (fuzzer): a 200-byte header claiming 4096 x 4096 with a 6 x 256 MLP made a
    16 x 16 decode render 16.7 M samples (about 17 GB, killed). Supersampling is capped now."""
    blob = _hostile_field(4096, 4096, (1, 1, 0, 256, 6, 1))
    assert len(blob) < 300
    field = read_field(blob)
    t0 = time.perf_counter()
    x = render_fields([field], (8, 8))
    assert time.perf_counter() - t0 < 1.0 and x.shape == (1, 3, 8, 8)
    with pytest.raises(ndf.NDFLimitError, match="max_render_values"):
        render_fields([field], None)  # its original size needs a 4.3 G-element activation


def test_supersampling_is_capped_and_still_a_box_filter():
    """Up to the cap the box filter is exact; beyond it MAX_SUPERSAMPLE^2 samples per pixel."""
    blob = ndf.encode(torch.rand(3, 64, 64), psnr=None, steps=5)
    field = read_field(blob)
    full = render_fields([field], None)
    at_8 = render_fields([field], 8)  # f = 8 = the cap: the exact 8x8 box filter of the full raster
    torch.testing.assert_close(at_8, torch.nn.functional.avg_pool2d(full, 8), rtol=0, atol=1e-5)
    at_4 = render_fields([field], 4)  # f = 16 would be needed; 8 x 8 samples of each footprint are used
    assert MAX_SUPERSAMPLE == 8 and at_4.shape == (1, 3, 4, 4)
    torch.testing.assert_close(at_4, torch.nn.functional.avg_pool2d(full, 16), rtol=0, atol=0.05)


def test_big_batches_render_in_chunks_with_the_same_pixels(monkeypatch):
    blobs = ndf.encode_batch([torch.rand(3, 8, 8) for _ in range(5)], psnr=None, steps=5)
    fields = [read_field(b) for b in blobs]
    whole = render_fields(fields, 8)
    per_image = fields[0].arch.peak_values(8, 8)
    monkeypatch.setitem(fmt.LIMITS, "max_render_values", 2 * per_image)  # two images per forward pass
    torch.testing.assert_close(render_fields(fields, 8), whole, rtol=0, atol=1e-6)
    monkeypatch.setitem(fmt.LIMITS, "max_render_values", per_image - 1)
    with pytest.raises(ndf.NDFLimitError, match="max_render_values"):
        render_fields(fields, 8)


def test_standalone_conv_field_is_refused_before_decoding():
    """Regression (fuzzer): a conv-field base re-labelled kind 1 reached torch.conv2d with
    per-image weights and raised RuntimeError."""
    blob = _hostile_field(8, 8, (2, 1, 4, 4, 4, 4), arch_id=2)
    with pytest.raises(ndf.NDFFormatError, match="standalone"):
        read_field(blob)


def test_big_runs_are_not_cached():
    from ndf_datasets.codec import coding

    coding._cached_run_params.cache_clear()
    code = TensorCode(1.0, 0.0, 1.0, -3, 3)
    coding._run_params(((coding._CACHED_RUN_SYMBOLS + 1, code), (1, code)))
    coding._run_params(((10, code), (1, code)))
    assert coding._cached_run_params.cache_info().currsize == 1


@pytest.mark.slow
def test_short_mutation_fuzz_run():
    """5000 mutated inputs (byte-level and structure-aware, mostly re-sealed): no finding."""
    result = run_random(5000, seed=1234)
    assert result["findings"] == [], result["findings"][:3]
    accepted = sum(v for k, v in result["outcomes"].items() if k.startswith("ok:"))
    assert accepted > 100  # the mutator reaches the deep paths, not only the CRC check
    assert result["max_input_s"] < 1.0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_short_coverage_guided_run(tmp_path):
    """A short atheris (libFuzzer) run: no crash, timeout or out-of-memory artifact."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fuzz", "--runs", "3000", "--workers", "1", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 0 and summary["findings"] == [], proc.stdout[-2000:]
    assert summary["engine"] == "atheris" and summary["inputs"] == 3000
