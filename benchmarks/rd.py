"""Rate-distortion: NDF operating points vs Pillow JPEG / WebP / AVIF / PNG on the SAME images.

    python -m benchmarks.rd cifar --bases b1.ndfbase b2.ndfbase --count 1000 --steps 20 \
        --out benchmarks/out/rd_cifar

For each codec and quality: bytes per image (every header included), bits per pixel and PSNR
(RGB or gray, 8-bit). For NDF records the shared base's bytes are reported separately (and
amortised over the dataset size in the table). Writes ``table.md``, ``rd.json``, an
RD-curve PNG and the BD-rate of each NDF curve vs each classic codec.
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
from ndf_datasets.codec.fitting import psnr

#: codec -> (Pillow format, qualities, extra save options); Pillow's defaults otherwise
CLASSIC = {
    "JPEG": ("JPEG", [30, 50, 70, 80, 90, 95], {}),
    "JPEG-444": ("JPEG", [70, 90, 95], {"subsampling": 0}),
    "WebP": ("WEBP", [30, 50, 70, 80, 90, 100], {}),
    "AVIF": ("AVIF", [30, 50, 70, 85, 95], {}),
}


def _psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def classic_points(images: np.ndarray) -> list[dict]:
    """``images``: N x H x W x C uint8. One row per (codec, quality), means over images."""
    rows = []
    mode = "L" if images.shape[-1] == 1 else "RGB"
    pil = [Image.fromarray(im[..., 0] if mode == "L" else im, mode) for im in images]
    pixels = images.shape[1] * images.shape[2]
    for name, (fmt, qualities, options) in CLASSIC.items():
        for q in qualities:
            sizes, quality = [], []
            try:
                for im, ref in zip(pil, images):
                    buf = io.BytesIO()
                    im.save(buf, fmt, quality=q, **options)
                    data = buf.getvalue()
                    back = np.asarray(Image.open(io.BytesIO(data)).convert(mode)).reshape(ref.shape)
                    sizes.append(len(data))
                    quality.append(_psnr_u8(back, ref))
            except (OSError, KeyError, ValueError) as exc:  # codec missing from this Pillow
                print(f"skipping {name}: {exc}")
                break
            rows.append({"codec": name, "setting": f"q{q}", "bytes": float(np.mean(sizes)),
                         "bpp": 8 * float(np.mean(sizes)) / pixels, "psnr": float(np.mean(quality))})
    for name, fmt, options in (("PNG", "PNG", {"optimize": True}), ("WebP-lossless", "WEBP", {"lossless": True})):
        sizes = []
        for im in pil:
            buf = io.BytesIO()
            im.save(buf, fmt, **options)
            sizes.append(len(buf.getvalue()))
        mean = float(np.mean(sizes))
        rows.append({"codec": name, "setting": "lossless", "bytes": mean, "bpp": 8 * mean / pixels, "psnr": float("inf")})
    return rows


def ndf_points(
    images: torch.Tensor, bases: list[Path], steps: int, psnr_target: float | None, dataset_size: int, scales: list[float]
) -> list[dict]:
    """One row per (base, lambda scale): encode every image as a record, decode, measure.

    The refinement steps minimise ``MSE + s * lmbda_base * bpp`` for each scale ``s``, which
    moves the operating point along the base's curve without training another base.
    """
    rows = []
    x = images.float() / 255
    pixels = images.shape[2] * images.shape[3]
    for path, scale in [(p, s) for p in bases for s in scales]:
        base = ndf.load_base(path)
        lmbda = base.metadata.get("lmbda", 1e-3) * scale
        t0 = time.perf_counter()
        recs = ndf.encode_batch(list(x), base=base, psnr=psnr_target, lmbda=lmbda, steps=steps, min_steps=0)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        dec = ndf.decode_batch(recs, base=base)
        dec_s = time.perf_counter() - t0
        mean_bytes = float(np.mean([len(r) for r in recs]))
        base_bytes = len(base.to_bytes())
        rows.append({
            "codec": "NDF", "setting": f"{path.stem} x{scale:g}", "bytes": mean_bytes, "bpp": 8 * mean_bytes / pixels,
            "psnr": float(psnr(dec, x).mean()), "base_bytes": base_bytes,
            "base_bytes_per_image": base_bytes / dataset_size, "fit_img_per_s": len(recs) / fit_s,
            "decode_img_per_s": len(recs) / dec_s, "macs_per_pixel": base.arch.macs_per_pixel(),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` vs ``anchor``; points are (bytes, psnr).

    Cubic fit of log-rate as a function of PSNR, integrated over the overlapping PSNR range.
    ``None`` when the curves do not overlap or have fewer than 2 points each.
    """
    a = sorted((p, np.log(r)) for r, p in anchor if np.isfinite(p))
    t = sorted((p, np.log(r)) for r, p in test if np.isfinite(p))
    if len(a) < 2 or len(t) < 2:
        return None
    lo, hi = max(a[0][0], t[0][0]), min(a[-1][0], t[-1][0])
    if lo >= hi:
        return None
    fa = np.polyfit([p for p, _ in a], [r for _, r in a], min(3, len(a) - 1))
    ft = np.polyfit([p for p, _ in t], [r for _, r in t], min(3, len(t) - 1))
    ia = np.polyval(np.polyint(fa), hi) - np.polyval(np.polyint(fa), lo)
    it = np.polyval(np.polyint(ft), hi) - np.polyval(np.polyint(ft), lo)
    return float((np.exp((it - ia) / (hi - lo)) - 1) * 100)


def report(rows: list[dict], out: Path, title: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "rd.json").write_text(json.dumps(rows, indent=1))
    lines = [f"### {title}", "", "| codec | setting | B/img | bpp | PSNR dB | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        note = ""
        if r["codec"] == "NDF":
            note = (f"+ base {r['base_bytes']} B once ({r['base_bytes_per_image']:.1f} B/img amortised); "
                    f"fit {r['fit_img_per_s']:.0f} img/s, decode {r['decode_img_per_s']:.0f} img/s, {r['macs_per_pixel']} MACs/px")
        lines.append(f"| {r['codec']} | {r['setting']} | {r['bytes']:.0f} | {r['bpp']:.3f} | {r['psnr']:.2f} | {note} |")
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if np.isfinite(r["psnr"]):
            curves.setdefault(r["codec"], []).append((r["bytes"], r["psnr"]))
    if "NDF" in curves:
        lines += ["", "BD-rate of NDF (negative = smaller files at equal PSNR):", ""]
        for codec, pts in curves.items():
            if codec != "NDF":
                bd = bd_rate(pts, curves["NDF"])
                lines.append(f"- vs {codec}: {'no overlap' if bd is None else f'{bd:+.1f}%'}")
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for codec, pts in curves.items():
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=codec)
        ax.set_xlabel("bytes per image (all headers)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "rd.png", dpi=120)
    except ImportError:
        pass
    return text


def main() -> None:
    from benchmarks.data import cifar10, mnist

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=["cifar", "mnist"])
    p.add_argument("--bases", type=Path, nargs="*", default=[])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--psnr", type=float, default=None, help="PSNR target for NDF encoding (default: the base's lambda)")
    p.add_argument("--lmbda-scales", type=float, nargs="+", default=[1.0], help="refinement lambda = scale * base lambda")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.dataset == "cifar":
        x, _ = cifar10("test", min(args.count, 1000))  # test 0-999: the lossless part
        size = 60000
    else:
        x, _ = mnist("test", args.count)
        size = 70000
    rows = classic_points(x.permute(0, 2, 3, 1).numpy())
    rows += ndf_points(x, args.bases, args.steps, args.psnr, size, args.lmbda_scales)
    print(report(rows, args.out or Path(f"benchmarks/out/rd_{args.dataset}"), f"{args.dataset} test 0-{len(x) - 1}"))


if __name__ == "__main__":
    main()
