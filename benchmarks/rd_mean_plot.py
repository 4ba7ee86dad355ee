"""The mean-PSNR allocation plot of BENCHMARKS.md from an ``rd.json`` of ``benchmarks.rd``.

    python -m benchmarks.rd cifar --learned cifar10 --mean-psnr 30 32 33 34 35 36 38 40 41 42 44 \
        --allocate-classic --out benchmarks/out/rd_mean
    python -m benchmarks.rd_mean_plot benchmarks/out/rd_mean/rd.json docs/img/rd_cifar_mean.png

NDF at one level per point and with the per-image allocation, WebP at one quality per point and
with the same allocation over its qualities, and the issue's two targets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CURVES = {
    "NDF": ("NDF {base}, one level per curve point", "o-"),
    "NDF mean": ("NDF {base}, mean-PSNR allocation", "s--"),
    "WebP": ("WebP, one quality per point", "o-"),
    "WebP mean-PSNR": ("WebP, the same allocation over qualities", "s--"),
}


def curves(rows: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(bytes, PSNR) points per curve of :data:`CURVES`; allocation rows that missed their mean are left out."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        mean = " mean " in f" {r['setting']} "
        if mean and r["psnr"] < float(r["setting"].split()[-1]) - 0.01:
            continue
        key = "NDF mean" if r["codec"] == "NDF" and mean else r["codec"]
        if key in CURVES:
            out.setdefault(key, []).append((r["bytes"], r["psnr"]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rd_json", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("--base", default="cifar10", help="the learned base's name in the legend")
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, pts in curves(json.loads(args.rd_json.read_text())).items():
        label, style = CURVES[key]
        pts = sorted(pts)
        ax.plot([b for b, _ in pts], [q for _, q in pts], style, label=label.format(base=args.base), ms=4)
    ax.plot([260, 480], [34, 40], "k*", ms=10, label="issue 11 targets")
    ax.set_xlim(150, 800)
    ax.set_ylim(27, 45)
    ax.set_xlabel("mean bytes per image (all headers)")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title("CIFAR-10 test 0-999: per-image allocation, NDF and WebP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
