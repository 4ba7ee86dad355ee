"""Kodak with a learned base: NDF compact records at fixed rate levels vs JPEG / WebP / AVIF.

    python -m benchmarks.kodak_learned --base natural --out benchmarks/out/kodak_learned

Every image of ``../shared/data/kodak`` (kodim01-24, never used for training) is encoded at each
``--levels`` level of the base and by Pillow at each quality; bytes include every header (the
base is counted apart: it is shipped once). Curves are the mean bits per pixel and mean PSNR
(8-bit RGB) over the images per setting; BD-rates come from those curves and, per image, from
each image's own curves (the mean of the per-image BD-rates is printed too).
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
from benchmarks.data import kodak
from benchmarks.rd import _psnr_u8, bd_rate

CLASSIC = {"JPEG": ("JPEG", [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]), "WebP": ("WEBP", [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
           "AVIF": ("AVIF", [20, 30, 40, 50, 60, 70, 80, 90])}


def classic(im: Image.Image, ref: np.ndarray) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    px = ref.shape[0] * ref.shape[1]
    for name, (fmt, qualities) in CLASSIC.items():
        pts = []
        try:
            for q in qualities:
                buf = io.BytesIO()
                im.save(buf, fmt, quality=q)
                back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
                pts.append((8 * len(buf.getvalue()) / px, _psnr_u8(back, ref)))
        except (OSError, KeyError, ValueError) as exc:
            print(f"skipping {name}: {exc}")
            continue
        out[name] = pts
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="natural")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 6, 12, 18, 24, 30, 36, 42, 48, 54, 63])
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/kodak_learned"))
    args = p.parse_args()
    base = ndf.load_base(args.base)
    levels = sorted({min(base.arch.levels - 1, lv) for lv in args.levels})
    images = kodak()[: args.limit]
    per_image = []
    t_enc = t_dec = 0.0
    for name, im in images:
        ref = np.asarray(im)
        x = torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 255
        px = ref.shape[0] * ref.shape[1]
        pts = []
        for lv in levels:
            t0 = time.perf_counter()
            blob = ndf.encode(x, base=base, level=lv, psnr=None)
            t_enc += time.perf_counter() - t0
            t0 = time.perf_counter()
            y = ndf.decode(blob, base=base)
            t_dec += time.perf_counter() - t0
            got = (y * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            pts.append((8 * len(blob) / px, _psnr_u8(got, ref)))
        row = {"image": name, "NDF": pts, **classic(im, ref)}
        per_image.append(row)
        print(json.dumps({"image": name, "NDF": [(round(b, 3), round(q, 2)) for b, q in pts]}), flush=True)
    codecs = [k for k in per_image[0] if k != "image"]
    mean = {c: [(float(np.mean([r[c][i][0] for r in per_image])), float(np.mean([r[c][i][1] for r in per_image])))
                for i in range(len(per_image[0][c]))] for c in codecs}
    lines = [f"### Kodak ({len(per_image)} images), base {args.base} ({len(base.to_bytes())} B, shipped once)", "",
             "| codec | setting | bpp | PSNR dB |", "|---|---|---|---|"]
    for c in codecs:
        settings = [f"level {lv}" for lv in levels] if c == "NDF" else [f"q{q}" for q in CLASSIC[c][1]]
        lines += [f"| {c} | {s} | {b:.3f} | {q:.2f} |" for s, (b, q) in zip(settings, mean[c])]
    lines += ["", "BD-rate of NDF (negative = fewer bits at equal PSNR):", ""]
    for c in codecs:
        if c == "NDF":
            continue
        bd = bd_rate(mean[c], mean["NDF"])
        per = [bd_rate(r[c], r["NDF"]) for r in per_image]
        per = [v for v in per if v is not None]
        lines.append(f"- vs {c}: mean curves {'no overlap' if bd is None else f'{bd:+.1f}%'}; "
                     f"per image (mean of {len(per)}) {np.mean(per):+.1f}%" if per else f"- vs {c}: no overlap")
    lines.append(f"\nNDF encode {t_enc / (len(per_image) * len(levels)):.2f} s/image, decode {t_dec / (len(per_image) * len(levels)):.2f} s/image "
                 f"({torch.get_num_threads()} threads)")
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "kodak.json").write_text(json.dumps({"levels": levels, "images": per_image, "mean": mean}, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for c in codecs:
            ax.plot([b for b, _ in mean[c]], [q for _, q in mean[c]], "o-", label=c)
        ax.set_xlabel("bits per pixel (all headers)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"Kodak, mean of {len(per_image)} images")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / "rd.png", dpi=120)
    except ImportError:
        pass
    print(text)


if __name__ == "__main__":
    main()
