"""The README's main job runs end to end on the bundled image (few steps, to stay quick)."""

from __future__ import annotations

from PIL import Image

from ndf_datasets.cli import main
from ndf_datasets.demo import sample_image


def test_demo_writes_ndf_and_three_pngs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--steps", "20", "--psnr", "20", "--standalone"]) == 0
    printed = capsys.readouterr().out
    assert "encoded:" in printed and printed.count("decoded") == 3
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    w, h = sample_image().size
    assert sorted(Image.open(p).size for p in pngs) == [(w // 2, h // 2), (w, h), (2 * w, 2 * h)]
    assert main(["demo", "-o", str(out), "--steps", "5"]) == 1  # refuses to overwrite


def test_demo_with_the_zoo_base_compares_with_jpeg_and_webp(tmp_path, capsys):
    from ndf_datasets.codec.zoo import zoo_names

    if "natural" not in zoo_names():
        import pytest

        pytest.skip("this installation has no natural zoo base")
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--psnr", "30"]) == 0
    printed = capsys.readouterr().out
    assert "zoo base 'natural'" in printed and "JPEG at equal PSNR" in printed and "WebP at equal PSNR" in printed
    assert len(sorted(out.glob("*.png"))) == 3
