"""The ``ndf`` command line on real files in a temp folder."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from PIL import Image

from ndf_datasets.cli import main

from .conftest import make_image


def test_encode_info_decode(tmp_path, capsys):
    png = tmp_path / "in.png"
    Image.fromarray(make_image(20, 30, 3, seed=2)).save(png)
    ndf_path = tmp_path / "in.ndf"
    assert main(["encode", str(png), "-o", str(ndf_path), "--psnr", "24", "--steps", "80", "-q"]) == 0
    assert "bytes" in capsys.readouterr().out
    assert main(["info", str(ndf_path)]) == 0
    shown = capsys.readouterr().out
    assert "kind          1 (field)" in shown and "bpp" in shown and "decoder MACs" in shown
    assert main(["info", "--json", str(ndf_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 30 and info["height"] == 20
    big = tmp_path / "big.png"
    assert main(["decode", str(ndf_path), "-o", str(big), "--size", "60x40"]) == 0
    assert Image.open(big).size == (60, 40)


def test_refuses_to_overwrite(tmp_path, capsys):
    png = tmp_path / "a.png"
    Image.fromarray(make_image(8, 8, 3)).save(png)
    out = tmp_path / "a.ndf"
    out.write_bytes(b"precious")
    assert main(["encode", str(png), "-o", str(out), "--steps", "10", "-q"]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_bad_file_gives_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.ndf"
    bad.write_bytes(b"NDF\x01garbage-garbage-garbage")
    assert main(["decode", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "bad.ndf" in err and "CRC" in err
    assert not (tmp_path / "x.png").exists()


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "ndf_datasets.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "encode" in r.stdout


def test_train_base_calibrates_the_scales_by_default(tmp_path, capsys):
    import ndf_datasets as ndf

    root = tmp_path / "imgs" / "train" / "a"
    root.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(make_image(16, 16, 3, seed=40 + i)).save(root / f"{i}.png")
    common = ["train-base", str(tmp_path / "imgs"), "--config", "16,16,8,16,16,16,1,2,4,8,3,8,1,1,4", "--steps", "4",
              "--batch-size", "4", "-q"]
    assert main([*common, str(tmp_path / "cal.ndfbase"), "--calibrate", "8"]) == 0
    assert main([*common, str(tmp_path / "raw.ndfbase"), "--calibrate", "0"]) == 0
    capsys.readouterr()
    cal, raw = ndf.load_base(str(tmp_path / "cal.ndfbase")), ndf.load_base(str(tmp_path / "raw.ndfbase"))
    assert cal.metadata["scale_calibration"]["images"] == 8 and "scale_calibration" not in raw.metadata
    w_cal, w_raw = cal.weights_on("cpu"), raw.weights_on("cpu")
    assert all(torch.equal(w_cal[k], w_raw[k]) for k in w_raw if k not in ("table.ldy", "table.jz"))  # same training
    assert not torch.equal(w_cal["table.ldy"], w_raw["table.ldy"])
    exported = tmp_path / "exp.ndfbase"  # --export-only loads its calibration images itself: the same base
    assert main([*common, str(exported), "--calibrate", "8", "--export-only", "--checkpoint", str(tmp_path / "cal.ndfbase.train")]) == 0
    assert exported.read_bytes() == (tmp_path / "cal.ndfbase").read_bytes()
