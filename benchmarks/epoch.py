"""One training epoch over CIFAR-size data: PNG ImageFolder vs NDFImageFolder (per-item
decoding) vs NDFImageFolder (deferred, one batched decode per batch). Same model, same loader
settings; images/s of the whole epoch (loading + decoding + forward/backward/step).

    python -m benchmarks.epoch --count 5000 --workers 2 --batch 128

The first run builds ``benchmarks/out/epoch/{png,ndf}/<class>/*`` from CIFAR-10 train images
(../shared/data/cifar10): a shared base fitted on them and one record per image.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import ndf_datasets as ndf
from benchmarks.data import cifar10

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def build(out: Path, count: int) -> None:
    """Write the PNG and NDF folders once (skipped when both exist)."""
    if (out / "done").exists():
        return
    x, y = cifar10("train", count)
    for c in CLASSES:
        (out / "png" / c).mkdir(parents=True, exist_ok=True)
        (out / "ndf" / c).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(out / "png" / CLASSES[int(y[i])] / f"{i:05d}.png")
    imgs = x.float() / 255
    base = ndf.fit_base(imgs, epochs=3, progress=True)
    base.save(out / "ndf" / ndf.base_filename(base.hash), overwrite=True)
    recs = ndf.encode_batch(list(imgs), base=base, psnr=None, steps=20, progress=True)
    for i, r in enumerate(recs):
        (out / "ndf" / CLASSES[int(y[i])] / f"{i:05d}.ndf").write_bytes(r)
    (out / "done").write_text("ok")


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def epoch(loader, decode=None) -> tuple[float, int]:
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    seen = 0
    t0 = time.perf_counter()
    for batch in loader:
        if decode is not None:
            x, y = decode(batch), batch.targets
        else:
            x, y = batch
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return time.perf_counter() - t0, seen


def main() -> None:
    from ndf_datasets.integrations.torchvision import NDFImageFolder, ndf_collate
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/epoch"))
    args = p.parse_args()
    build(args.out, args.count)
    common = dict(batch_size=args.batch, shuffle=True, num_workers=args.workers, generator=torch.Generator().manual_seed(0))
    results = {}
    png = ImageFolder(str(args.out / "png"), transform=transforms.ToTensor())
    results["png_imagefolder"] = epoch(DataLoader(png, **common))
    per_item = NDFImageFolder(str(args.out / "ndf"), size=32)
    results["ndf_per_item"] = epoch(DataLoader(per_item, **common))
    deferred = NDFImageFolder(str(args.out / "ndf"), size=32, deferred=True)
    decoder = deferred.decoder()
    results["ndf_deferred_batch"] = epoch(DataLoader(deferred, collate_fn=ndf_collate, **common), decode=decoder)
    rows = {k: {"seconds": round(s, 2), "images": n, "images_per_s": round(n / s, 1)} for k, (s, n) in results.items()}
    print(json.dumps({"count": args.count, "workers": args.workers, "batch": args.batch, "threads": torch.get_num_threads(), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
