"""Decode speed of codec v2 records (the zoo bases) against Pillow's PNG decoder, on real images.

    python -m benchmarks.decode_v2                       # CIFAR-10 test 0-999 at psnr=40, MNIST test at level 5
    python -m benchmarks.decode_v2 --count 512 --psnr 37

The rows issue 12 asks for, all on the same images:

* **PNG (Pillow), 1 thread**: ``Image.open(...).convert("RGB")`` + ``np.asarray`` of each
  image's PNG bytes: the rate the targets are relative to.
* **read path, 1 thread**: parse + CRC + entropy decoding (for a hyper-field record this
  includes the exact hyper-synthesis and slice networks that give each symbol its scale),
  per item (``read_field`` on each record, what a per-sample loader pays) and batched
  (``read_fields`` on batches of ``--batch``: what ``NDFImageFolder.__getitems__`` pays).
* **render**: ``render_fields`` on fields already read, batches of ``--batch``, at the
  native size and at half size (the half-size decode area-filters the synthesis features,
  so the synthesis trunk still runs at native resolution), 1 and 2 threads.
* **full batch decode**: ``decode_batch`` end to end (read + render), 2 threads.

Every figure is the best of ``--repeat`` runs. Writes ``benchmarks/out/decode_v2.json`` and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import ndf_datasets as ndf
from benchmarks.data import cifar10, mnist
from benchmarks.decode_speed import _time as _best  # best of `repeat` runs after a warm-up

OUT = Path(__file__).resolve().parent / "out"


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _png_bytes(images: torch.Tensor) -> list[bytes]:
    out = []
    for x in images:
        arr = x.permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _png_decode(blobs: list[bytes]) -> None:
    for b in blobs:
        with Image.open(io.BytesIO(b)) as im:
            np.asarray(im.convert("RGB" if im.mode != "L" else "L"))


def measure(name: str, images: torch.Tensor, base: ndf.SharedBase, encode_kw: dict, batch: int, repeat: int) -> dict:
    """All the rows for one dataset and base (see the module docstring)."""
    torch.set_num_threads(2)
    arrays = list(images.permute(0, 2, 3, 1).numpy())
    t0 = time.perf_counter()
    blobs = ndf.encode_batch(arrays, base=base, **encode_kw)
    encode_rate = len(blobs) / (time.perf_counter() - t0)
    h, w = images.shape[-2:]
    half = (h // 2, w // 2)
    pngs = _png_bytes(images)
    n = len(blobs)
    row: dict = {"dataset": name, "base": base.arch.name, "count": n, "batch": batch, "size": [h, w],
                 "encode": encode_kw, "record_bytes": float(np.mean([len(b) for b in blobs])),
                 "png_bytes": float(np.mean([len(p) for p in pngs])), "encode_img_per_s_2threads": encode_rate}  # fmt: skip
    torch.set_num_threads(1)
    row["png_img_per_s_1thread"] = n / _best(lambda: _png_decode(pngs), repeat)
    row["read_per_item_img_per_s_1thread"] = n / _best(lambda: [ndf.read_field(b, base) for b in blobs], repeat)
    groups = _batches(blobs, batch)
    row["read_batched_img_per_s_1thread"] = n / _best(lambda: [ndf.read_fields(g, base) for g in groups], repeat)
    fields = [f for g in groups for f in ndf.read_fields(g, base)]
    fgroups = _batches(fields, batch)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for label, size in (("native", None), ("half", half)):
            t = _best(lambda: [ndf.render_fields(g, size) for g in fgroups], repeat)
            row[f"render_{label}_img_per_s_{threads}thread" + ("s" if threads > 1 else "")] = n / t
    torch.set_num_threads(2)
    for label, size in (("native", None), ("half", half)):
        t = _best(lambda: [ndf.decode_batch(g, size=size, base=base) for g in groups], repeat)
        row[f"decode_batch_{label}_img_per_s_2threads"] = n / t
    row["half_over_native_render_time_1thread"] = (
        row["render_native_img_per_s_1thread"] / row["render_half_img_per_s_1thread"]
    )
    row["half_over_native_decode_time_2threads"] = (
        row["decode_batch_native_img_per_s_2threads"] / row["decode_batch_half_img_per_s_2threads"]
    )
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset (base) | B/record | PNG B | PNG decode, 1 thr | read per item, 1 thr | read batched, 1 thr "
        "| render native / half, 1 thr | render native / half, 2 thr | decode_batch native / half, 2 thr |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} ({r['base']}) | {r['record_bytes']:.0f} | {r['png_bytes']:.0f} "
            f"| {r['png_img_per_s_1thread']:,.0f} | {r['read_per_item_img_per_s_1thread']:,.0f} "
            f"| {r['read_batched_img_per_s_1thread']:,.0f} "
            f"| {r['render_native_img_per_s_1thread']:,.0f} / {r['render_half_img_per_s_1thread']:,.0f} "
            f"| {r['render_native_img_per_s_2threads']:,.0f} / {r['render_half_img_per_s_2threads']:,.0f} "
            f"| {r['decode_batch_native_img_per_s_2threads']:,.0f} / {r['decode_batch_half_img_per_s_2threads']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--psnr", type=float, default=40.0, help="CIFAR records' PSNR target")
    p.add_argument("--mnist-level", type=int, default=5)
    p.add_argument("--cifar-base", default="cifar10")
    p.add_argument("--mnist-base", default="mnist")
    args = p.parse_args()
    rows = []
    x, _ = cifar10("test", args.count)
    rows.append(
        measure("CIFAR-10 test", x, ndf.load_base(args.cifar_base), {"psnr": args.psnr}, args.batch, args.repeat)
    )
    print(json.dumps(rows[-1]), flush=True)
    m, _ = mnist("test", args.count)
    rows.append(
        measure(
            "MNIST test",
            m,
            ndf.load_base(args.mnist_base),
            {"psnr": None, "level": args.mnist_level},
            args.batch,
            args.repeat,
        )
    )
    print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "decode_v2.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
