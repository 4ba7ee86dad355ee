"""Any-resolution fidelity on Kodak: decode smaller (aliasing?) and larger (vs bicubic).

    python -m benchmarks.anyres --data ../shared/data/kodak --limit 8 --psnr 29 --steps 400
    python -m benchmarks.anyres --summary

Two experiments, one JSON line per (experiment, image, setting) appended to ``--out`` (rows
already there are skipped, so an interrupted run resumes):

``down``
    Fit the full-size image (standalone field, PSNR target ``--psnr``), decode it at full,
    1/2 and 1/4 size and compare each with the area-downsampled original. No aliasing means
    the smaller decodes are at least as close to their reference as the full-size decode.
``up``
    Area-downsample the image to 1/2 size, fit that (target ``--up-psnr``), decode the field
    at FULL size and compare with the original; the baseline is bicubic upsampling of the
    same 1/2-size image (what a loader would do without NDF). ``--interp`` picks the
    latent-grid interpolation of the fitted field (0 bilinear, 1 bicubic).

``--plot FILE`` writes a crop of one image: original, bicubic x2 and NDF x2 side by side.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

import ndf_datasets as ndf
from ndf_datasets.api import default_config
from ndf_datasets.codec.fitting import psnr
from ndf_datasets.codec.images import to_tensor


def _area(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool2d(x[None], factor)[0]


def _bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _q(x: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation, as any decoded image that is saved or fed to a model would be."""
    return (x.clamp(0, 1) * 255).round() / 255


def _p(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(psnr(_q(a)[None], b[None]))


def _fit_half(x: torch.Tensor, target: float, steps: int, interp: int) -> tuple[torch.Tensor, bytes, float]:
    """Area-downsample ``x`` to 1/2 size (8-bit) and fit a field to it; returns (1/2 image, blob, seconds)."""
    _, h, w = x.shape
    small = _q(_area(x, 2))
    config = list(default_config(h // 2, w // 2))
    config[-1] = interp
    t0 = time.perf_counter()
    blob = ndf.encode(small, psnr=target, steps=steps, config=tuple(config))
    return small, blob, time.perf_counter() - t0


def down(name: str, x: torch.Tensor, target: float, steps: int) -> dict:
    t0 = time.perf_counter()
    blob = ndf.encode(x, psnr=target, steps=steps)
    enc = time.perf_counter() - t0
    _, h, w = x.shape
    row = {"exp": "down", "image": name, "target": target, "steps": steps, "bytes": len(blob), "encode_s": enc}
    for factor in (1, 2, 4):
        y = ndf.decode(blob, size=(h // factor, w // factor))
        row[f"psnr_1/{factor}"] = _p(y, _area(x, factor) if factor > 1 else x)
    return row


def up(name: str, x: torch.Tensor, target: float, steps: int, interp: int) -> dict:
    _, h, w = x.shape
    small, blob, enc = _fit_half(x, target, steps, interp)
    field_small = ndf.decode(blob)
    field_big = ndf.decode(blob, size=(h, w))
    return {
        "exp": "up",
        "image": name,
        "target": target,
        "steps": steps,
        "interp": interp,
        "bytes": len(blob),
        "encode_s": enc,
        "psnr_half": _p(field_small, small),
        "psnr_ndf_x2": _p(field_big, x),
        "psnr_bicubic_x2": _p(_bicubic(small, (h, w)), x),
        "psnr_bicubic_of_field_x2": _p(_bicubic(_q(field_small), (h, w)), x),
    }


def run(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["exp"], r["image"], r["target"], r["steps"], r.get("interp")))
    files = sorted(args.data.glob("kodim*.png"))[: args.limit]
    if not files:
        raise SystemExit(f"no kodim*.png in {args.data}")
    jobs = [("down", f, args.psnr, None) for f in files] if "down" in args.exp else []
    if "up" in args.exp:
        jobs += [("up", f, args.up_psnr, i) for i in args.interp for f in files]
    for exp, f, target, interp in jobs:
        if (exp, f.name, target, args.steps, interp) in done:
            continue
        torch.manual_seed(0)
        x = to_tensor(Image.open(f).convert("RGB"))
        row = down(f.name, x, target, args.steps) if exp == "down" else up(f.name, x, target, args.steps, interp)
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


def summary(out: Path) -> str:
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    lines = []
    downs = [r for r in rows if r["exp"] == "down"]
    if downs:
        n = len(downs)
        m = {k: sum(r[k] for r in downs) / n for k in ("psnr_1/1", "psnr_1/2", "psnr_1/4", "bytes")}
        worse = sum(r["psnr_1/2"] < r["psnr_1/1"] or r["psnr_1/4"] < r["psnr_1/1"] for r in downs)
        lines += [
            "| decode size | mean PSNR dB vs (area-downsampled) original |",
            "|---|---|",
            f"| full | {m['psnr_1/1']:.2f} |",
            f"| 1/2 | {m['psnr_1/2']:.2f} |",
            f"| 1/4 | {m['psnr_1/4']:.2f} |",
            "",
            f"{n} images, mean {m['bytes']:.0f} B; images where a smaller decode is worse than full size: {worse}.",
            "",
        ]
    ups = [r for r in rows if r["exp"] == "up"]
    if ups:
        lines += [
            "| latent interp | images | bytes at 1/2 | PSNR at 1/2 | NDF x2 | bicubic x2 of the 1/2 image | NDF - bicubic | bicubic x2 of the decoded 1/2 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for interp in sorted({r["interp"] for r in ups}):
            rs = [r for r in ups if r["interp"] == interp]
            n = len(rs)
            m = {k: sum(r[k] for r in rs) / n for k in rs[0] if isinstance(rs[0][k], float)}
            lines.append(
                f"| {'bicubic' if interp else 'bilinear'} | {n} | {sum(r['bytes'] for r in rs) / n:.0f} | {m['psnr_half']:.2f} | "
                f"{m['psnr_ndf_x2']:.2f} | {m['psnr_bicubic_x2']:.2f} | {m['psnr_ndf_x2'] - m['psnr_bicubic_x2']:+.2f} | "
                f"{m['psnr_bicubic_of_field_x2']:.2f} |"
            )
    return "\n".join(lines)


def plot(data: Path, image: str, target: float, steps: int, interp: int, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    x = to_tensor(Image.open(data / image).convert("RGB"))
    _, h, w = x.shape
    small, blob, _ = _fit_half(x, target, steps, interp)
    panels = {
        "original": x,
        f"bicubic x2 ({_p(_bicubic(small, (h, w)), x):.2f} dB)": _bicubic(small, (h, w)),
        f"NDF x2, {len(blob)} B ({_p(ndf.decode(blob, size=(h, w)), x):.2f} dB)": ndf.decode(blob, size=(h, w)),
    }
    top, left = h // 2 - 64, w // 2 - 96
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, img) in zip(axes, panels.items()):
        ax.imshow(_q(img)[:, top : top + 128, left : left + 192].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{image}: fitted at 1/2 size, decoded at full size (centre crop)")
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    print(f"wrote {dest}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/kodak"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/anyres.jsonl"))
    p.add_argument("--exp", nargs="+", default=["down", "up"], choices=["down", "up"])
    p.add_argument("--limit", type=int, default=None, help="first N images")
    p.add_argument("--psnr", type=float, default=29.0, help="target of the full-size fits (down)")
    p.add_argument("--up-psnr", type=float, default=32.0, help="target of the 1/2-size fits (up)")
    p.add_argument("--interp", type=int, nargs="+", default=[0, 1], choices=[0, 1])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--summary", action="store_true")
    p.add_argument("--plot", type=Path, default=None, help="write a crop comparison PNG here and exit")
    p.add_argument("--plot-image", default="kodim23.png")
    args = p.parse_args()
    if args.summary:
        print(summary(args.out))
    elif args.plot:
        plot(args.data, args.plot_image, args.up_psnr, args.steps, args.interp[-1], args.plot)
    else:
        run(args)


if __name__ == "__main__":
    main()
