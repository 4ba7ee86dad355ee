"""Progressive resizing with NDF: one dataset, one loader, epochs at 16, then 24, then 32 pixels.

    python -m experiments.progressive --count 5000 --workers 2 --batch 128 --base benchmarks/out/footprint_base.ndfbase

CIFAR-10 train images 0..count-1 (../shared/data) are converted once with ``ndf convert
--format files`` (records of ``--base``; without it, convert fits a short base) into
``experiments/out/progressive/ndf``, and saved as PNGs for the reference loader. Then one
small CNN (global average pooling, so it takes any input size) is trained for one epoch at
each size of ``--sizes`` through

* ``NDFImageFolder`` (per-item decode in the workers) and ``NDFImageFolder(deferred=True)``
  (workers entropy-decode, one batched render per batch): the size changes with
  ``ds.set_size(px)`` between epochs, the dataset and the DataLoader (persistent workers)
  stay as they are, and each image is decoded directly at ``px``;
* torchvision ``ImageFolder`` of the PNGs: decode the full 32x32 PNG, then ``Resize(px)``
  (what a pixel loader has to do), the size read from a :class:`SharedSize` too.

Prints seconds and images/s per epoch (loading + decoding + forward/backward/step) and the
last batch's loss; writes ``experiments/out/progressive/result.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

OUT = Path(__file__).resolve().parent / "out" / "progressive"


def build(out: Path, count: int, base: str | None) -> None:
    """The NDF files layout (ndf convert) and the PNG ImageFolder of the same images (once)."""
    from PIL import Image

    import ndf_datasets as ndf
    from benchmarks.data import cifar10
    from ndf_datasets.data.sources import CIFAR10_CLASSES, ArraySplit, Source

    x, y = cifar10("train", count)
    images = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    labels = [int(v) for v in y]
    source = Source("cifar10-bin", f"CIFAR-10 train 0-{count - 1}", CIFAR10_CLASSES, {"train": ArraySplit(images, labels)}, "cifar10")
    ndf.convert(source, out / "ndf", layout="files", base=base, base_epochs=2, progress=True)
    if not (out / "png" / "done").exists():
        for i, (im, label) in enumerate(zip(images, labels)):
            folder = out / "png" / CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(folder / f"{i:05d}.png")
        (out / "png" / "done").write_text("ok")


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


class ResizeTo:
    """``Resize`` to whatever a SharedSize says now (the pixel loader's progressive resizing)."""

    def __init__(self, size):
        self.size = size

    def __call__(self, image):
        from torchvision.transforms import functional as F

        return F.to_tensor(F.resize(image, [self.size()] * 2, antialias=True) if self.size() != 32 else image)


def run(name: str, loader: DataLoader, sizes: list[int], set_size, decode=None) -> list[dict]:
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rows = []
    for px in sizes:
        set_size(px)
        seen, t0 = 0, time.perf_counter()
        for batch in loader:
            x, y = (decode(batch), batch.targets) if decode is not None else batch
            assert x.shape[-1] == px, (name, x.shape, px)
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
        s = time.perf_counter() - t0
        rows.append({"loader": name, "size": px, "seconds": round(s, 2), "images": seen, "images_per_s": round(seen / s, 1), "loss": round(loss.item(), 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    from ndf_datasets.integrations.sizes import SharedSize
    from ndf_datasets.integrations.torchvision import NDFImageFolder, ndf_collate
    from torchvision.datasets import ImageFolder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 24, 32])
    p.add_argument("--base", default=None, help="base of the records (.ndfbase or zoo name); default: convert fits one")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    build(args.out, args.count, args.base)
    common = dict(batch_size=args.batch, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0,
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    rows = []
    per_item = NDFImageFolder(args.out / "ndf" / "train", size=args.sizes[0])
    rows += run("NDFImageFolder, per item", DataLoader(per_item, **common), args.sizes, per_item.set_size)
    deferred = NDFImageFolder(args.out / "ndf" / "train", size=args.sizes[0], deferred=True)
    loader = DataLoader(deferred, collate_fn=ndf_collate, **common)
    rows += run("NDFImageFolder, deferred batch decode", loader, args.sizes, deferred.set_size, decode=deferred.decoder())
    size = SharedSize(args.sizes[0])
    png = ImageFolder(str(args.out / "png"), transform=ResizeTo(size))
    rows += run("PNG ImageFolder + Resize", DataLoader(png, **common), args.sizes, size.set)
    result = {"count": args.count, "workers": args.workers, "batch": args.batch, "threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d %H:%M %Z"), "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    print("| loader | " + " | ".join(f"{px} px: s (img/s)" for px in args.sizes) + " |")
    print("|---|" + "---|" * len(args.sizes))
    for name in dict.fromkeys(r["loader"] for r in rows):
        cells = [f"{r['seconds']:.2f} ({r['images_per_s']:,.0f})" for r in rows if r["loader"] == name]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
