"""The dataset card (``OUT/README.md``) and ``ndf preview``, from a real (tiny) conversion."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import ndf_datasets as ndf
from ndf_datasets.cli import main as cli_main
from ndf_datasets.data.card import CARD, is_generated

from .test_sources import write_image_folder

KW = dict(shard_size=6, batch_size=6, steps=5, base=None, base_epochs=1, psnr=20.0, progress=False)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("card")
    src = write_image_folder(root / "src", {"train": 5, "test": 2})
    ndf.convert(src, root / "out", **KW)
    return src, root / "out"


def _header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


def test_card_is_an_hf_dataset_card_of_the_conversion(converted):
    _, out = converted
    text = (out / CARD).read_text()
    manifest = json.loads((out / "ndf_dataset.json").read_text())
    meta = _header(text)
    info = meta["dataset_info"]
    assert sorted(s["name"] for s in info["splits"]) == sorted(manifest["splits"])
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == manifest["counts"] == {"train": 10, "test": 4}
    assert meta["task_categories"] == ["image-classification"] and "ndf" in meta["tags"]
    datasets = pytest.importorskip("datasets")
    import ndf_datasets.integrations.hf  # noqa: F401 (the NDFImage feature)

    features = datasets.Features._from_yaml_list(info["features"])
    assert type(features["image"]).__name__ == "NDFImage"
    assert features["label"].names == ["cat", "dog"] and features["key"].dtype == "string"
    for part in ("## Codec settings", "## Bytes per image", "## PSNR distribution", "NDFShardDataset(OUT",
                 "epoch_dataset(OUT", "datasets.load_dataset(OUT", manifest["base"]):  # fmt: skip
        assert part in text, part
    for split, n in manifest["counts"].items():
        assert f"| {split} | {n} |" in text
    assert is_generated(text.encode())
    assert not is_generated(text.replace("cat", "kitten").encode())


def test_card_is_reproducible_and_an_edited_one_is_kept(converted, tmp_path):
    src, ref = converted
    out = tmp_path / "out"
    ndf.convert(src, out, **KW)
    assert (out / CARD).read_bytes() == (ref / CARD).read_bytes(), "a pure function of the conversion"
    (out / "ndf_dataset.json").unlink()
    ndf.convert(src, out, **KW)  # resume: the same card, rewritten silently
    assert (out / CARD).read_bytes() == (ref / CARD).read_bytes()
    edited = (out / CARD).read_text().replace("# src, as neural fields", "# My notes\n\n# src, as neural fields")
    (out / CARD).write_text(edited)
    (out / "ndf_dataset.json").unlink()
    with pytest.warns(UserWarning, match="README.md was edited"):
        ndf.convert(src, out, **KW)
    assert (out / CARD).read_text() == edited
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ndf.convert(src, out, force=True, **KW)  # --force starts over but never deletes what a person wrote
    assert (out / CARD).read_text() == edited


def test_card_does_not_disturb_loading(converted, tmp_path):
    datasets = pytest.importorskip("datasets")
    _, out = converted
    ds = datasets.load_dataset(str(out), split="test", cache_dir=str(tmp_path / "hf")).with_format("torch")
    assert len(ds) == 4 and ds[0]["image"].shape == (3, 8, 8)


def test_preview_from_a_real_conversion(converted, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    src, out = converted
    png = tmp_path / "preview.png"
    assert cli_main(["preview", str(out), "-o", str(png), "--source", str(src), "-n", "3"]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 400
    assert cli_main(["preview", str(out), "-o", str(png)]) == 1, "an existing output is never overwritten"
    assert "exists" in capsys.readouterr().err
    assert cli_main(["preview", str(out), "-o", str(png), "--split", "test", "-f"]) == 0
    assert cli_main(["preview", str(tmp_path), "-o", str(tmp_path / "x.png")]) == 1
