"""One training epoch over CIFAR-size data: PNG ImageFolder vs NDF loaders. Same model, same
loader settings; images/s of the whole epoch (loading + decoding + forward/backward/step).

    python -m benchmarks.epoch --count 5000 --workers 2 --batch 128                 # zoo cifar10 records, psnr=40
    python -m benchmarks.epoch --count 5000 --base fit --out benchmarks/out/epoch_v1  # v1: a fitted conv base

Rows: ``png_imagefolder`` (torchvision ``ImageFolder`` + ``ToTensor``); ``ndf_imagefolder``
(``NDFImageFolder``: each worker decodes whole batches through ``__getitems__``);
``ndf_per_item`` (the same folder read one sample at a time, what a subclass overriding
``__getitem__`` gets); ``ndf_deferred_batch`` (workers entropy-decode per item, the main
process renders each batch); ``ndf_webdataset`` (one ``.tar`` shard of the same records,
``.decode().to_tuple("ndf", "cls").batched(B).map(ndf_batch_decode(...))`` in the workers).

The first run builds ``OUT/{png,ndf,wds}`` from CIFAR-10 train images (../shared/data/cifar10):
with a zoo base the records are ``ndf.encode_batch(..., base=B, psnr=P)``; ``--base fit`` fits a
v1 shared base on the images as the first version of this benchmark did.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from ndf_datasets.integrations.torchvision import NDFImageFolder
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import ndf_datasets as ndf
from benchmarks.data import cifar10

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def build(out: Path, count: int, base_name: str, psnr: float) -> None:
    """Write the PNG, NDF-folder and WebDataset copies once (skipped when ``OUT/done`` exists)."""
    from ndf_datasets.integrations.webdataset import write_shards

    if (out / "done").exists():
        return
    x, y = cifar10("train", count)
    for c in CLASSES:
        (out / "png" / c).mkdir(parents=True, exist_ok=True)
        (out / "ndf" / c).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(out / "png" / CLASSES[int(y[i])] / f"{i:05d}.png")
    if base_name == "fit":
        imgs = x.float() / 255
        base = ndf.fit_base(imgs, epochs=3, progress=True)
        recs = ndf.encode_batch(list(imgs), base=base, psnr=None, steps=20, progress=True)
    else:
        base = ndf.load_base(base_name)
        recs = ndf.encode_batch(list(x.permute(0, 2, 3, 1).numpy()), base=base, psnr=psnr, progress=True)
    base.save(out / "ndf" / ndf.base_filename(base.hash), overwrite=True)
    for i, r in enumerate(recs):
        (out / "ndf" / CLASSES[int(y[i])] / f"{i:05d}.ndf").write_bytes(r)
    samples = [{"ndf": r, "cls": int(y[i])} for i, r in enumerate(recs)]
    # 8 shards: every DataLoader worker gets shards to read
    write_shards(str(out / "wds" / "train-%06d.tar"), samples, maxcount=max(1, -(-count // 8)), base=base)
    (out / "done").write_text(
        json.dumps({"base": base_name, "psnr": psnr, "record_bytes": sum(map(len, recs)) / len(recs)})
    )


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 8 * 8, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
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
        loss = nn.functional.cross_entropy(net(x), torch.as_tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    return time.perf_counter() - t0, seen


class PerItemFolder(NDFImageFolder):
    """An NDFImageFolder read one sample at a time (an overridden ``__getitem__`` turns ``__getitems__`` off)."""

    def __getitem__(self, index):
        return super().__getitem__(index)


def main() -> None:
    import webdataset as wds
    from ndf_datasets.integrations.torchvision import ndf_collate
    from ndf_datasets.integrations.webdataset import ndf_batch_decode
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--base", default="cifar10", help="zoo name or .ndfbase path of the records, or 'fit' (a v1 base)")
    p.add_argument("--psnr", type=float, default=40.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out/epoch"))
    p.add_argument("--rows", nargs="*", default=None, help="only these rows")
    args = p.parse_args()
    build(args.out, args.count, args.base, args.psnr)
    common = dict(
        batch_size=args.batch, shuffle=True, num_workers=args.workers, generator=torch.Generator().manual_seed(0)
    )
    ndf_dir = str(args.out / "ndf")
    rows = {
        "png_imagefolder": lambda: epoch(
            DataLoader(ImageFolder(str(args.out / "png"), transform=transforms.ToTensor()), **common)
        ),
        "ndf_imagefolder": lambda: epoch(DataLoader(NDFImageFolder(ndf_dir, size=32), **common)),
        "ndf_per_item": lambda: epoch(DataLoader(PerItemFolder(ndf_dir, size=32), **common)),
    }

    def deferred():
        ds = NDFImageFolder(ndf_dir, size=32, deferred=True)
        return epoch(DataLoader(ds, collate_fn=ndf_collate, **common), decode=ds.decoder())

    def webdataset():
        urls = sorted(str(u) for u in (args.out / "wds").glob("train-*.tar"))
        ds = (wds.WebDataset(urls, shardshuffle=False).shuffle(1000, seed=0).decode().to_tuple("ndf", "cls")
              .batched(args.batch, partial=True).map(ndf_batch_decode(32, base_locations=[str(args.out / "wds")])))  # fmt: skip
        return epoch(wds.WebLoader(ds, batch_size=None, num_workers=min(args.workers, len(urls))))

    rows["ndf_deferred_batch"] = deferred
    rows["ndf_webdataset"] = webdataset
    results = {k: fn() for k, fn in rows.items() if args.rows is None or k in args.rows}
    out = {k: {"seconds": round(s, 2), "images": n, "images_per_s": round(n / s, 1)} for k, (s, n) in results.items()}
    done = (args.out / "done").read_text()
    meta = json.loads(done) if done.startswith("{") else {}
    print(json.dumps({"count": args.count, "workers": args.workers, "batch": args.batch, "threads": torch.get_num_threads(),
                      "records": meta, "results": out}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
