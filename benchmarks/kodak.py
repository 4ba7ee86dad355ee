"""Kodak kodim01-24 with standalone fields: bpp, PSNR and encode seconds per operating point.

    python -m benchmarks.kodak --data ../shared/data/kodak --psnr 26 29 32 --steps 400 \
        --out benchmarks/out/kodak.jsonl

One JSON line per (image, target) is appended to ``--out`` as soon as it is measured, and
rows already there are skipped, so an interrupted run resumes where it stopped. ``--summary``
prints the per-operating-point means as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from PIL import Image

import ndf_datasets as ndf
from ndf_datasets.codec.fitting import psnr
from ndf_datasets.codec.images import to_tensor


def run(data: Path, targets: list[float], steps: int, out: Path, limit: int | None, early_stop: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done.add((row["image"], row["target"], row["steps"], row.get("early_stop", True)))
    files = sorted(data.glob("kodim*.png"))[:limit]
    if not files:
        raise SystemExit(f"no kodim*.png in {data}")
    for target in targets:
        for f in files:
            if (f.name, target, steps, early_stop) in done:
                continue
            img = Image.open(f).convert("RGB")
            t0 = time.perf_counter()
            blob = ndf.encode(img, psnr=target, steps=steps, early_stop=early_stop, progress=False)
            enc_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            x = ndf.decode(blob)
            dec_s = time.perf_counter() - t0
            h, w = img.height, img.width
            row = {
                "image": f.name,
                "target": target,
                "steps": steps,
                "early_stop": early_stop,
                "bytes": len(blob),
                "bpp": 8 * len(blob) / (h * w),
                "psnr": float(psnr(x[None], to_tensor(img)[None])),
                "encode_s": enc_s,
                "decode_s": dec_s,
                "macs_per_pixel": ndf.inspect(blob)["macs_per_pixel"],
                "threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(),
            }
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{f.name} target {target}: {row['bpp']:.3f} bpp {row['psnr']:.2f} dB {enc_s:.1f} s", flush=True)


def summary(out: Path) -> str:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = sorted({(r["target"], r["steps"], r.get("early_stop", True)) for r in rows})
    lines = [
        "| target dB | steps | early stop | images | mean bpp | mean PSNR dB | encode s/img | decode s/img |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target, steps, early in keys:
        rs = [r for r in rows if (r["target"], r["steps"], r.get("early_stop", True)) == (target, steps, early)]
        n = len(rs)
        mean = lambda k: sum(r[k] for r in rs) / n  # noqa: E731
        lines.append(
            f"| {target} | {steps} | {early} | {n} | {mean('bpp'):.3f} | {mean('psnr'):.2f} | {mean('encode_s'):.1f} | {mean('decode_s'):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    p.add_argument("--psnr", type=float, nargs="+", default=[26.0, 29.0, 32.0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/kodak.jsonl"))
    p.add_argument("--no-early-stop", action="store_true", help="optimise to --steps, keep the cheapest point meeting the target")
    p.add_argument("--summary", action="store_true", help="print the table of an existing --out and exit")
    args = p.parse_args()
    if not args.summary:
        run(args.data, args.psnr, args.steps, args.out, args.limit, early_stop=not args.no_early_stop)
    print(summary(args.out))


if __name__ == "__main__":
    main()
