"""Rate-distortion: NDF operating points vs Pillow JPEG / WebP / AVIF / PNG on the SAME images.

    python -m benchmarks.rd cifar --bases b1.ndfbase b2.ndfbase --count 1000 --steps 20 \
        --out benchmarks/out/rd_cifar
    python -m benchmarks.rd cifar --learned cifar10 --count 1000      # a learned (zoo) base, fixed levels
    python -m benchmarks.rd cifar --learned cifar10 --mean-psnr 32 34 36 38 40 42 --allocate-classic
        # ... and mean-PSNR targets (per-image levels on the lower convex hull), Pillow codecs alike

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
            rows.append(
                {
                    "codec": name,
                    "setting": f"q{q}",
                    "bytes": float(np.mean(sizes)),
                    "bpp": 8 * float(np.mean(sizes)) / pixels,
                    "psnr": float(np.mean(quality)),
                }
            )
    for name, fmt, options in (("PNG", "PNG", {"optimize": True}), ("WebP-lossless", "WEBP", {"lossless": True})):
        sizes = []
        for im in pil:
            buf = io.BytesIO()
            im.save(buf, fmt, **options)
            sizes.append(len(buf.getvalue()))
        mean = float(np.mean(sizes))
        rows.append(
            {"codec": name, "setting": "lossless", "bytes": mean, "bpp": 8 * mean / pixels, "psnr": float("inf")}
        )
    return rows


def ndf_points(
    images: torch.Tensor,
    bases: list[Path],
    steps: int,
    psnr_target: float | None,
    dataset_size: int,
    scales: list[float],
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
        rows.append(
            {
                "codec": "NDF",
                "setting": f"{path.stem} x{scale:g}",
                "bytes": mean_bytes,
                "bpp": 8 * mean_bytes / pixels,
                "psnr": float(psnr(dec, x).mean()),
                "base_bytes": base_bytes,
                "base_bytes_per_image": base_bytes / dataset_size,
                "fit_img_per_s": len(recs) / fit_s,
                "decode_img_per_s": len(recs) / dec_s,
                "macs_per_pixel": base.arch.macs_per_pixel(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def kodak32() -> torch.Tensor:
    """Natural 32x32 test images that are not CIFAR: every Kodak image area-downscaled 4x
    (192 x 128 or 128 x 192) and cut into its 24 non-overlapping 32 x 32 tiles (576 images)."""
    from benchmarks.data import kodak

    tiles = []
    for _, im in kodak():
        small = np.asarray(im.resize((im.width // 4, im.height // 4), Image.Resampling.BOX))
        for y in range(0, small.shape[0] - 31, 32):
            for x in range(0, small.shape[1] - 31, 32):
                tiles.append(small[y : y + 32, x : x + 32])
    return torch.from_numpy(np.stack(tiles).transpose(0, 3, 1, 2).copy())


def _learned_row(images: torch.Tensor, base, setting: str, dataset_size: int, **encode: object) -> dict:
    """Encode ``images`` (uint8) as compact records of a learned base with ``encode_batch(**encode)``,
    decode them and measure one row (PSNR on the 8-bit decoded pixels, like the classic codecs;
    an image decoded exactly counts as 100 dB, as in ``ndf convert``'s statistics)."""
    x = images.float() / 255
    ref = images.permute(0, 2, 3, 1).numpy()
    t0 = time.perf_counter()
    recs = ndf.encode_batch(list(x), base=base, **encode)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = ndf.decode_batch(recs, base=base)
    dec_s = time.perf_counter() - t0
    got = (dec * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    mean_bytes = float(np.mean([len(r) for r in recs]))
    base_bytes = len(base.to_bytes())
    row = {
        "codec": "NDF",
        "setting": setting,
        "bytes": mean_bytes,
        "bpp": 8 * mean_bytes / (images.shape[2] * images.shape[3]),
        "psnr": float(np.mean([min(100.0, _psnr_u8(a, b)) for a, b in zip(got, ref)])),
        "exact_images": int(sum(np.array_equal(a, b) for a, b in zip(got, ref))),
        "base_bytes": base_bytes,
        "base_bytes_per_image": base_bytes / dataset_size,
        "fit_img_per_s": len(recs) / enc_s,
        "decode_img_per_s": len(recs) / dec_s,
        "macs_per_pixel": base.arch.macs_per_pixel(),
    }
    print(json.dumps(row), flush=True)
    return row


def learned_points(
    images: torch.Tensor, bases: list[Path], levels: list[int], refine_steps: int, dataset_size: int
) -> list[dict]:
    """One row per (learned base, rate level): compact records at a fixed level, decoded, measured
    (``exact_images`` counts the images decoded exactly)."""
    rows = []
    for path in bases:
        base = ndf.load_base(str(path))
        top = base.arch.levels - 1
        for level in sorted({min(top, lv) for lv in levels}):
            setting = f"{Path(str(path)).stem} level {level}"
            rows.append(_learned_row(images, base, setting, dataset_size, level=level, refine_steps=refine_steps, batch_size=500))
    return rows


def mean_psnr_points(images: torch.Tensor, bases: list[Path], targets: list[float], batch: int, dataset_size: int) -> list[dict]:
    """One row per (learned base, mean-PSNR target): ``encode_batch(mean_psnr=)`` over batches of
    ``batch`` images (the bytes go where they buy the most decibels), decoded, measured."""
    rows = []
    for path in bases:
        base = ndf.load_base(str(path))
        stem = Path(str(path)).stem
        for target in targets:
            row = _learned_row(images, base, f"{stem} mean {target:g}", dataset_size, mean_psnr=target, batch_size=batch)
            rows.append({**row, "curve": f"NDF {stem} mean-PSNR"})
    return rows


def allocated_classic_points(images: np.ndarray, targets: list[float]) -> list[dict]:
    """Pillow JPEG / WebP given the same per-image allocation as ``mean_psnr``: each image's
    quality (5, 10, ..., 100) chosen on the batch's lower convex hull for each mean target, so
    the comparison with NDF's mean-PSNR curve is like for like."""
    from ndf_datasets.codec.learned import choose_on_hull

    rows = []
    pil = [Image.fromarray(im) for im in images]
    pixels = images.shape[1] * images.shape[2]
    qualities = list(range(5, 101, 5))
    for name in ("JPEG", "WebP"):
        fmt, _, options = CLASSIC[name]
        size = np.zeros((len(pil), len(qualities)))
        quality = np.zeros_like(size)
        for i, (im, ref) in enumerate(zip(pil, images)):
            for j, q in enumerate(qualities):
                buf = io.BytesIO()
                im.save(buf, fmt, quality=q, **options)
                back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
                size[i, j], quality[i, j] = len(buf.getvalue()), min(100.0, _psnr_u8(back, ref))
        gain, cost = torch.from_numpy(quality), torch.from_numpy(size)
        for target in targets:
            pick = choose_on_hull(gain, cost, target)
            at = torch.arange(len(pil))
            if float(gain[at, pick].mean()) < target - 0.01:
                continue  # beyond this codec's qualities
            b = float(cost[at, pick].mean())
            rows.append(
                {
                    "codec": f"{name} mean-PSNR",
                    "setting": f"mean {target:g}",
                    "bytes": b,
                    "bpp": 8 * b / pixels,
                    "psnr": float(gain[at, pick].mean()),
                }
            )
    return rows


def bytes_at(points: list[tuple[float, float]], target: float) -> float | None:
    """Bytes at ``target`` dB on a curve of (bytes, psnr) points: log-bytes interpolated
    linearly in PSNR between the two points around it (``None`` outside the curve)."""
    pts = sorted((p, b) for b, p in points if np.isfinite(p))
    for (p0, b0), (p1, b1) in zip(pts, pts[1:]):
        if p0 <= target <= p1 and p1 > p0:
            return float(np.exp(np.log(b0) + (np.log(b1) - np.log(b0)) * (target - p0) / (p1 - p0)))
    return None


#: Published / measured anchors (CIFAR-10 test; COIN++ repository results and papers), bytes per image.
ANCHORS = {
    "BMS hyperprior": [(267, 34.0), (483, 40.0)],
    "BPG 4:4:4": [(280, 33.3), (552, 40.0)],
    "COIN++": [(281, 30.5)],
    "Cheng 2020": [(280, 37.2), (372, 40.0)],
    # not published: NDF v1 (conv-field base, lambda 4e-4, the default before codec v2), measured here (EXPERIMENTS.md)
    "NDF v1 (measured)": [(334, 25.86)],
}


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


def report(rows: list[dict], out: Path, title: str, anchors: dict | None = None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "rd.json").write_text(json.dumps(rows, indent=1))
    lines = [f"### {title}", "", "| codec | setting | B/img | bpp | PSNR dB | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        note = ""
        if r["codec"] == "NDF":
            note = (
                f"+ base {r['base_bytes']} B once ({r['base_bytes_per_image']:.1f} B/img amortised); "
                f"fit {r['fit_img_per_s']:.0f} img/s, decode {r['decode_img_per_s']:.0f} img/s, {r['macs_per_pixel']} MACs/px"
            )
        lines.append(
            f"| {r['codec']} | {r['setting']} | {r['bytes']:.0f} | {r['bpp']:.3f} | {r['psnr']:.2f} | {note} |"
        )
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if np.isfinite(r["psnr"]):
            # one curve per NDF base (the setting is "<base> level N" or "<base> ...")
            key = r.get("curve") or (r["codec"] if r["codec"] != "NDF" else f"NDF {r['setting'].split(' level')[0]}")
            curves.setdefault(key, []).append((r["bytes"], r["psnr"]))
    ndf_curves = [k for k in curves if k.startswith("NDF")]
    if ndf_curves:
        for target in (34.0, 40.0):
            for codec, pts in curves.items():
                b = bytes_at(pts, target)
                if b is not None:
                    lines.append(f"- {codec} at {target:.0f} dB: {b:.0f} B/img")
        for name in ndf_curves:
            lines += ["", f"BD-rate of {name} (negative = smaller files at equal PSNR):", ""]
            for codec, pts in curves.items():
                if not codec.startswith("NDF"):
                    bd = bd_rate(pts, curves[name])
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
        if anchors:
            for (name, pts), marker in zip(anchors.items(), "s^vDP"):
                label = name if "measured" in name else f"{name} (published)"
                ax.plot([b for b, _ in pts], [p for _, p in pts], marker, linestyle=":", label=label)
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
    p.add_argument(
        "dataset",
        choices=["cifar", "mnist", "kodak32"],
        help="kodak32: 32x32 tiles of the Kodak images downscaled 4x (natural images that are not CIFAR)",
    )
    p.add_argument("--bases", type=Path, nargs="*", default=[])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--psnr", type=float, default=None, help="PSNR target for NDF encoding (default: the base's lambda)")
    p.add_argument(
        "--lmbda-scales", type=float, nargs="+", default=[1.0], help="refinement lambda = scale * base lambda"
    )
    p.add_argument(
        "--learned", nargs="*", default=[], help="learned bases (paths or zoo names): points at fixed rate levels"
    )
    p.add_argument("--levels", type=int, nargs="+", default=[0, 8, 16, 24, 32, 40, 48, 56, 63])
    p.add_argument("--refine-steps", type=int, default=0)
    p.add_argument("--mean-psnr", type=float, nargs="*", default=[], help="learned bases: mean-PSNR targets (allocated)")
    p.add_argument("--mean-batch", type=int, default=500, help="images per mean-PSNR allocation (default 500)")
    p.add_argument("--allocate-classic", action="store_true", help="JPEG / WebP with the same per-image allocation")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.dataset == "cifar":
        x, _ = cifar10("test", min(args.count, 1000))  # test 0-999: the lossless part
        size = 60000
    elif args.dataset == "kodak32":
        x = kodak32()[: args.count]
        size = 60000
    else:
        x, _ = mnist("test", args.count)
        size = 70000
    rows = classic_points(x.permute(0, 2, 3, 1).numpy())
    rows += ndf_points(x, args.bases, args.steps, args.psnr, size, args.lmbda_scales)
    rows += learned_points(x, args.learned, args.levels, args.refine_steps, size)
    rows += mean_psnr_points(x, args.learned, args.mean_psnr, args.mean_batch, size)
    if args.allocate_classic and x.shape[1] == 3:
        rows += allocated_classic_points(x.permute(0, 2, 3, 1).numpy(), args.mean_psnr or [30, 32, 34, 36, 38, 40])
    anchors = ANCHORS if args.dataset == "cifar" else None
    print(
        report(
            rows, args.out or Path(f"benchmarks/out/rd_{args.dataset}"), f"{args.dataset} test 0-{len(x) - 1}", anchors
        )
    )


if __name__ == "__main__":
    main()
