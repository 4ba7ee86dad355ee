"""Bytes on disk per image: the same 10,000 CIFAR-10 images stored in every layout, NDF's and the usual ones.

    python -m benchmarks.footprint --base cifar10 --psnr 40   # the NDF rows with records of that base
    python -m benchmarks.footprint --fit-epochs 2         # no base yet: fit one the way ndf convert does (short)
    python -m benchmarks.footprint --skip-ndf             # only the other rows

The images are CIFAR-10 train 0-9999 (``data_batch_1``, lossless) from ../shared/data.

* **NDF rows.** ``ndf.convert`` encodes the images once, with the given base, into the
  default layout (one ``.tar.gz`` shard of 10,000 one-member samples); the same records are
  then written in every other layout with the very functions ``ndf convert`` writes them
  with (``data.units._shard_data``: the bytes are those ``ndf convert --format ...`` would
  write; the default layout's are checked against convert's). Records of a new codec: pass
  its base (``--base zoo-name-or-path``) and re-run; only the NDF rows change.
* **The others**: a PNG ImageFolder (Pillow's default PNG), HF ``datasets``' Parquet of PNG
  (``Dataset.from_dict`` with an ``Image`` column, ``to_parquet``: what the Hub's CIFAR-10
  stores), WebDataset tars of PNG / WebP q90 / JPEG q95 (+ ``.cls``, ``wds.TarWriter``), and
  the python pickle of ``cifar-10-batches-py`` (rebuilt as Python 2's cPickle wrote the
  original ``data_batch_1``: the same dict, protocol 2, py2 strings) next to the official
  binary record file.

"bytes" are file sizes; "allocated" is what the file system allocates (``du``, 4 KiB blocks
here), which for one-file-per-image layouts is the real cost. The base is stated apart.
Writes ``benchmarks/out/footprint.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
COUNT = 10000


def _sizes(paths: list[Path]) -> tuple[int, int]:
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _encoded(image: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


def others(images: np.ndarray, labels: list[int], classes: tuple[str, ...], work: Path) -> dict[str, dict]:
    """The usual ways of storing the images: ImageFolder, HF Parquet, WebDataset, pickles."""
    import datasets
    import webdataset as wds

    from tests.test_sources import py2_pickle  # protocol 2 with py2 strings, as the originals

    rows: dict[str, dict] = {}
    pngs = [_png(im) for im in images]
    folder = work / "png_imagefolder"
    for i, (data, label) in enumerate(zip(pngs, labels)):
        (folder / classes[label]).mkdir(parents=True, exist_ok=True)
        (folder / classes[label] / f"{i:05d}.png").write_bytes(data)
    rows["PNG ImageFolder"] = _row([folder], "one .png per image in class folders (Pillow default PNG)")

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
    table = datasets.Dataset.from_dict(
        {"img": [{"bytes": b, "path": None} for b in pngs], "label": labels}, features=features
    )
    table.to_parquet(str(work / "hf_png.parquet"))
    rows["HF parquet of PNG"] = _row(
        [work / "hf_png.parquet"], "datasets Image column of PNG bytes, Dataset.to_parquet"
    )

    for name, ext, encode in (
        ("WebDataset PNG", "png", lambda im, d: d),
        ("WebDataset WebP q90", "webp", lambda im, d: _encoded(im, "WEBP", quality=90)),
        ("WebDataset JPEG q95", "jpg", lambda im, d: _encoded(im, "JPEG", quality=95)),
    ):
        path = work / f"wds_{ext}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i, (im, data, label) in enumerate(zip(images, pngs, labels)):
                sink.write({"__key__": f"{i:05d}", ext: encode(im, data), "cls": label})
        rows[name] = _row([path], f"one tar, .{ext} + .cls per sample (wds.TarWriter)")
    gz = work / "wds_png.tar.gz"
    with wds.TarWriter(str(gz)) as sink:
        for i, (data, label) in enumerate(zip(pngs, labels)):
            sink.write({"__key__": f"{i:05d}", "png": data, "cls": label})
    rows["WebDataset PNG, .tar.gz"] = _row([gz], "the same, gzip-compressed")

    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": list(labels),
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1).copy(),
        b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(images))],
    }
    (work / "data_batch_1").write_bytes(py2_pickle(batch))
    rows["python pickle (cifar-10-batches-py)"] = _row(
        [work / "data_batch_1"], "data_batch_1 rebuilt as Python 2's cPickle wrote it"
    )
    raw = b"".join(bytes([label]) + im.transpose(2, 0, 1).tobytes() for im, label in zip(images, labels))
    (work / "data_batch_1.bin").write_bytes(raw)
    rows["binary records (cifar-10-batches-bin)"] = _row(
        [work / "data_batch_1.bin"], "1 label byte + 3,072 pixel bytes"
    )
    return rows


def _row(paths: list[Path], what: str, records: int | None = None) -> dict:
    size, allocated = _sizes(paths)
    row = {
        "bytes": size,
        "allocated": allocated,
        "per_image": round(size / COUNT, 1),
        "allocated_per_image": round(allocated / COUNT, 1),
        "what": what,
    }
    if records is not None:
        row.update(records=records, over_records=round(size / records, 4))
    return row


def ndf_rows(
    images: np.ndarray,
    labels: list[int],
    classes: tuple[str, ...],
    work: Path,
    base: str | None,
    fit_epochs: int,
    steps: int,
    psnr: float | None = None,
) -> tuple[dict, dict]:
    """Encode once with ``ndf.convert``, then write the same records in every layout."""
    import ndf_datasets as ndf
    from ndf_datasets.data import MANIFEST, shards
    from ndf_datasets.data.job import ConvertSettings, _Unit
    from ndf_datasets.data.sources import ArraySplit, Source
    from ndf_datasets.data.units import _file_name, _shard_data

    source = Source(
        "cifar10-bin",
        "benchmarks: CIFAR-10 train 0-9999",
        classes,
        {"train": ArraySplit(images, list(labels))},
        "cifar10",
    )
    out = work / "ndf_default"
    t0 = time.time()
    result = ndf.convert(
        source, out, base=base, base_epochs=fit_epochs, steps=steps, progress=True, psnr=psnr or "auto"
    )
    encode_s = time.time() - t0
    the_base = ndf.load_base(next(out.glob("*.ndfbase")))
    (shard,) = sorted(out.glob("train-*.tar.gz"))
    blobs = [parts["ndf"] for _, parts in shards.iter_shard(str(shard))]
    records = sum(len(b) for b in blobs)
    unit = _Unit("train", 0, 0, COUNT, 0)
    layouts = {
        "ndf WebDataset, compact .tar.gz (default)": dict(layout="webdataset"),
        "ndf WebDataset, compact .tar": dict(layout="webdataset", compress=False),
        "ndf WebDataset, .ndf+.cls+.json .tar (before)": dict(
            layout="webdataset", members=("ndf", "cls", "json"), compress=False
        ),
        "ndf WebDataset, .ndf+.cls+.json .tar.gz": dict(layout="webdataset", members=("ndf", "cls", "json")),
        "ndf Parquet (zstd)": dict(layout="parquet"),
    }
    rows = {}
    for name, kw in layouts.items():
        settings = ConvertSettings(**kw)
        data, index = _shard_data(source, unit, blobs, the_base, settings)  # index: stats/<shard>.ndfidx (metadata)
        path = work / f"ndf_{len(rows)}{settings.shard_suffix}"
        path.write_bytes(data)
        if kw == {"layout": "webdataset"}:
            assert data == shard.read_bytes(), "re-packing does not give ndf convert's bytes"
        rows[name] = _row(
            [path],
            f"{settings.layout}, members {'+'.join(settings.members)}, {'compressed' if settings.compress else 'plain'}",
            records,
        )
    files = work / "ndf_files"
    for i, (blob, label) in enumerate(zip(blobs, labels)):
        target = files / _file_name(source, unit, i, label)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    rows["ndf files (NDFImageFolder)"] = _row([files], "one .ndf per image in class folders", records)
    manifest = json.loads((out / MANIFEST).read_text())
    facts = {
        "base": the_base.hash.hex(), "base_arch": the_base.arch.name, "base_bytes": len(the_base.to_bytes()),
        "base_per_image_over_this_set": round(len(the_base.to_bytes()) / COUNT, 1),
        "records_mean": round(records / COUNT, 1), "psnr_mean": manifest["stats"]["psnr"]["mean"],
        "encode_seconds": round(encode_s, 1), "images_per_s": round(result.images_per_s, 1),
        "manifest_footprint": manifest["footprint"],
    }  # fmt: skip
    return rows, facts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=None, help="base of the NDF records (a .ndfbase path or a zoo name)")
    p.add_argument("--fit-epochs", type=int, default=2, help="without --base: epochs of the base ndf convert fits")
    p.add_argument("--steps", type=int, default=20, help="refinement steps per record (ndf convert's default: 20)")
    p.add_argument("--psnr", type=float, default=None, help="PSNR target of the records (default: ndf convert's)")
    p.add_argument("--skip-ndf", action="store_true")
    p.add_argument("--skip-others", action="store_true")
    p.add_argument("--work", type=Path, default=OUT / "footprint")
    args = p.parse_args()
    from benchmarks.data import cifar10
    from ndf_datasets.data.sources import CIFAR10_CLASSES

    x, y = cifar10("train", COUNT)
    images = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    labels = [int(v) for v in y]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    result = {"images": COUNT, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "rows": {}, "machine": os.uname().nodename}
    if not args.skip_ndf:
        rows, facts = ndf_rows(
            images, labels, CIFAR10_CLASSES, args.work, args.base, args.fit_epochs, args.steps, args.psnr
        )
        result["rows"].update(rows)
        result["ndf"] = facts
        saved = OUT / "footprint_base.ndfbase"
        shutil.copy(next((args.work / "ndf_default").glob("*.ndfbase")), saved)
        print(f"base used: {facts['base']} ({facts['base_arch']}), a copy in {saved} (re-run with --base {saved})")
    if not args.skip_others:
        result["rows"].update(others(images, labels, CIFAR10_CLASSES, args.work))
    OUT.mkdir(exist_ok=True)
    (OUT / "footprint.json").write_text(json.dumps(result, indent=1))
    png = result["rows"].get("PNG ImageFolder", {}).get("per_image")
    print("| layout | B/image (file bytes) | B/image allocated | / mean record | / PNG ImageFolder (file bytes) |")
    print("|---|---|---|---|---|")
    for name, r in result["rows"].items():
        over = f"{r['over_records']:.3f}x" if "over_records" in r else ""
        vs = f"{r['per_image'] / png:.3f}x" if png else ""
        print(f"| {name} | {r['per_image']:,.1f} | {r['allocated_per_image']:,.1f} | {over} | {vs} |")
    if "ndf" in result:
        f = result["ndf"]
        print(
            f"records: mean {f['records_mean']} B, {f['psnr_mean']} dB; base {f['base_bytes']:,} B ({f['base_arch']}) once"
        )


if __name__ == "__main__":
    main()
