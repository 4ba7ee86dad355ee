"""Per-image comparison at equal quality: NDF rows of benchmarks/kodak.py vs the smallest
Pillow JPEG / WebP file that reaches at least the same PSNR on the same image.

    python -m benchmarks.kodak_compare --out benchmarks/out/kodak.jsonl --target 29 --no-early-stop

Prints a row per image and the mean byte ratio NDF / codec (below 1: NDF is smaller).
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def smallest_at(img: Image.Image, fmt: str, need: float) -> tuple[int, float, int] | None:
    """(bytes, psnr, quality) of the smallest ``fmt`` file with PSNR >= need (quality 1..100)."""
    ref = np.asarray(img)
    best = None
    lo, hi = 1, 100  # PSNR grows with quality: binary search the lowest quality that is enough
    while lo <= hi:
        q = (lo + hi) // 2
        buf = io.BytesIO()
        img.save(buf, fmt, quality=q)
        p = psnr_u8(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), ref)
        if p >= need:
            best = (len(buf.getvalue()), p, q)
            hi = q - 1
        else:
            lo = q + 1
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/kodak.jsonl"))
    p.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    p.add_argument("--target", type=float, default=29.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--no-early-stop", action="store_true")
    args = p.parse_args()
    rows = [json.loads(line) for line in args.out.read_text().splitlines()]
    rows = [r for r in rows if r["target"] == args.target and r.get("early_stop", True) == (not args.no_early_stop)]
    if args.steps is not None:
        rows = [r for r in rows if r["steps"] == args.steps]
    ratios: dict[str, list[float]] = {"JPEG": [], "WEBP": []}
    print("| image | NDF bytes | NDF dB | JPEG bytes (q) | WebP bytes (q) |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: r["image"]):
        img = Image.open(args.data / r["image"]).convert("RGB")
        cells = []
        for fmt in ("JPEG", "WEBP"):
            found = smallest_at(img, fmt, r["psnr"])
            if found is None:
                cells.append("not reached")
                continue
            ratios[fmt].append(r["bytes"] / found[0])
            cells.append(f"{found[0]} (q{found[2]})")
        print(f"| {r['image']} | {r['bytes']} | {r['psnr']:.2f} | {cells[0]} | {cells[1]} |")
    for fmt, rs in ratios.items():
        if rs:
            print(f"mean NDF/{fmt} bytes at equal PSNR over {len(rs)} images: {np.mean(rs):.2f} (geometric {np.exp(np.mean(np.log(rs))):.2f})")


if __name__ == "__main__":
    main()
