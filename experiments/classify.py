"""Classifier accuracy: trained on the original images vs on NDF (decoded through the loaders) vs JPEG/WebP.

MNIST, the seed's protocol (LeNet-5, Adam lr 1e-3, cross-entropy, 5 epochs, batch 64)::

    python -m experiments.classify mnist --source images --seeds 0 1 2
    python -m experiments.classify mnist --source ndf:benchmarks/out/ndf_mnist --seeds 0 1 2
    python -m experiments.classify mnist --source webp:75 --seeds 0 1 2

CIFAR-10, CPU protocol (a 4-layer CNN, Adam 1e-3 with cosine decay, ``--epochs``, train on
``--train`` images, test on the lossless test images 0-999 or ``--test-count`` of the 10,000
test images: 1000-9999 come from a lossy JPEG copy, fine for accuracy, never for PSNR)::

    python -m experiments.classify cifar --source ndf:benchmarks/out/ndf_cifar10 --epochs 10

The seed's full CIFAR protocol (ResNet-18, Adam 1e-3, cosine, 100 epochs), one command on a GPU::

    python -m experiments.classify cifar --model resnet18 --epochs 100 --test-count 10000 --device cuda \\
        --source ndf:benchmarks/out/ndf_cifar10

``--source``:
  ``images``            the original pixels;
  ``ndf:DIR``           NDF shards written by ``ndf convert`` (``DIR/train-*.tar[.gz]``, ``DIR/test-*``),
                        read through the WebDataset adapter (``ndf_samples`` + ``ndf_read`` +
                        ``ndf_batch_decode``) - the path a user's DataLoader takes;
  ``jpeg:Q``/``webp:Q`` Pillow round trips at quality Q (the classic codecs at matching sizes);
  ``learned:BASE@PSNR`` compact records of a learned base (a path or zoo name) at a PSNR target,
                        encoded and decoded in-process (``ndf.encode_batch`` + ``ndf.decode_batch``);
                        ``learned:BASE#LEVEL`` at a fixed rate level.

Decoding is deterministic, so each source is decoded ONCE through its loader into a tensor
and every epoch reads that tensor (the loader's per-epoch cost is measured separately by
``benchmarks/epoch.py``). One JSON line per (source, seed) is appended to ``--out``;
``--summary`` prints the table and ``--plot FILE`` draws accuracy vs bytes per image.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from benchmarks.data import cifar10, mnist
from ndf_datasets.codec.fitting import psnr as psnr_of


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs (conv 6@5x5 pad 2, pool, conv 16@5x5, pool, fc 120-84-10)."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.c2 = nn.Conv2d(6, 16, 5)
        self.f1, self.f2, self.f3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.f3(F.relu(self.f2(F.relu(self.f1(x.flatten(1))))))


class SmallCNN(nn.Module):
    """A CPU-sized CIFAR CNN: 4 conv layers (32-32-64-64) with batch norm, 2 pools, one fc."""

    def __init__(self, channels: int = 3, classes: int = 10):
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.body = nn.Sequential(block(channels, 32), block(32, 32), nn.MaxPool2d(2), block(32, 64), block(64, 64), nn.MaxPool2d(2))
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))


def resnet18(classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with the usual CIFAR stem (3x3 conv, stride 1, no max-pool)."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(num_classes=classes)
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


# ----------------------------------------------------------------------------- sources


def _ndf_split(directory: str, split: str, size: int, count: int | None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Decode a split's shards through the WebDataset adapter; returns images, labels, mean bytes."""
    import webdataset as wds
    from ndf_datasets.integrations.webdataset import ndf_batch_decode, ndf_read, ndf_samples

    urls = sorted(glob.glob(f"{directory}/{split}-*.tar") + glob.glob(f"{directory}/{split}-*.tar.gz"))
    if not urls:
        raise SystemExit(f"no {split}-*.tar[.gz] shards in {directory} (make them with `ndf convert`)")
    pipeline = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .map(lambda s: {**s, "bytes": len(s["ndf"])})
        .map(ndf_samples(ndf_read()))
        .to_tuple("ndf", "cls", "bytes")
        .batched(512)
        .map(ndf_batch_decode(size))
    )
    xs, ys, nbytes = [], [], []
    for fields, labels, sizes in pipeline:
        xs.append(fields)
        ys.append(torch.as_tensor([int(c) for c in labels]))
        nbytes += list(sizes)
        if count is not None and sum(len(y) for y in ys) >= count:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    if count is not None:
        x, y, nbytes = x[:count], y[:count], nbytes[:count]
    return x, y, float(np.mean(nbytes))


def _classic(x: torch.Tensor, fmt: str, quality: int) -> tuple[torch.Tensor, float]:
    """Round-trip N x C x H x W float images through Pillow; returns decoded images, mean bytes."""
    out, sizes = [], []
    u8 = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    mode = "L" if u8.shape[-1] == 1 else "RGB"
    for im in u8:
        buf = io.BytesIO()
        Image.fromarray(im[..., 0] if mode == "L" else im, mode).save(buf, fmt, quality=quality)
        sizes.append(buf.tell())
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert(mode)).reshape(im.shape)
        out.append(torch.from_numpy(back.copy()))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255, float(np.mean(sizes))


def _learned(x: torch.Tensor, spec: str) -> tuple[torch.Tensor, float]:
    """Encode N x C x H x W float images as compact records of a learned base and decode them."""
    import ndf_datasets as ndf

    if "#" in spec:
        name, level = spec.split("#")
        kw = {"level": int(level), "psnr": None}
    else:
        name, target = spec.split("@")
        kw = {"psnr": float(target)}
    base = ndf.load_base(name)
    out, sizes = [], []
    for start in range(0, len(x), 2000):
        recs = ndf.encode_batch(list(x[start : start + 2000]), base=base, batch_size=500, **kw)
        sizes += [len(r) for r in recs]
        out.append(ndf.decode_batch(recs, base=base))
    return (torch.cat(out) * 255).round() / 255, float(np.mean(sizes))


def load(dataset: str, source: str, train_count: int | None, test_count: int | None) -> dict:
    """Train/test tensors for a source plus its bytes/image and PSNR vs the original pixels."""
    raw = mnist if dataset == "mnist" else cifar10
    xtr, ytr = raw("train", train_count)
    xte, yte = raw("test", test_count)
    xtr, xte = xtr.float() / 255 if xtr.dtype == torch.uint8 else xtr, xte.float() / 255 if xte.dtype == torch.uint8 else xte
    size = xtr.shape[-1]
    info = {"bytes": None, "psnr_train": None, "psnr_test": None}
    if source == "images":
        return {"train": (xtr, ytr), "test": (xte, yte), **info}
    kind, _, arg = source.partition(":")
    t0 = time.perf_counter()
    if kind == "ndf":
        ntr, ntry, btr = _ndf_split(arg, "train", size, train_count)
        nte, ntey, bte = _ndf_split(arg, "test", size, test_count)
        if not (torch.equal(ntry, ytr[: len(ntry)]) and torch.equal(ntey, yte[: len(ntey)])):
            raise SystemExit(f"labels in {arg} do not match the raw dataset's order")
        bytes_per_image = btr
    elif kind == "learned":
        import warnings

        with warnings.catch_warnings(record=True):  # targets a few images miss are counted in the PSNR
            (ntr, btr), (nte, _) = _learned(xtr, arg), _learned(xte, arg)
        ntry, ntey = ytr, yte
        bytes_per_image = btr
    elif kind in ("jpeg", "webp"):
        fmt = "JPEG" if kind == "jpeg" else "WEBP"
        (ntr, btr), (nte, _) = _classic(xtr, fmt, int(arg)), _classic(xte, fmt, int(arg))
        ntry, ntey = ytr, yte
        bytes_per_image = btr
    else:
        raise SystemExit(f"unknown source {source!r}")
    decode_s = time.perf_counter() - t0
    # PSNR only against lossless references (CIFAR test 1000+ are from a JPEG copy)
    lossless_test = len(nte) if dataset == "mnist" else min(len(nte), 1000)
    return {
        "train": (ntr, ntry),
        "test": (nte, ntey),
        "bytes": bytes_per_image,
        "psnr_train": float(psnr_of(ntr, xtr[: len(ntr)]).mean()),
        "psnr_test": float(psnr_of(nte[:lossless_test], xte[:lossless_test]).mean()),
        "decode_s": decode_s,
    }


# ----------------------------------------------------------------------------- training


def train_eval(data: dict, model_name: str, epochs: int, batch: int, seed: int, device: str, cosine: bool) -> dict:
    torch.manual_seed(seed)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    model = {"lenet": LeNet5, "cnn": SmallCNN}.get(model_name, lambda c: resnet18())(xtr.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = epochs * math.ceil(len(xtr) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    g = torch.Generator().manual_seed(seed)
    epoch_s, losses = [], []
    for _ in range(epochs):
        model.train()
        t0, total, n = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(len(xtr), generator=g).split(batch):
            x, y = xtr[idx].to(device), ytr[idx].to(device)
            if model_name != "lenet":  # standard CIFAR augmentation: random flip
                flip = torch.rand(len(x), generator=g) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1).to(device), x.flip(-1), x)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        epoch_s.append(time.perf_counter() - t0)
        losses.append(total / n)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(xte), 1000):
            correct += int((model(xte[i : i + 1000].to(device)).argmax(1).cpu() == yte[i : i + 1000]).sum())
    return {"test_acc": 100.0 * correct / len(xte), "train_loss": losses[-1], "epoch_s": float(np.mean(epoch_s))}


# ----------------------------------------------------------------------------- reporting


def summary(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["model"], r["epochs"], r["train"], r["test"], r["source"]), []).append(r)
    lines = [
        "| dataset | model | epochs | train/test | source | B/img | PSNR dB (test) | seeds | test acc % (mean ± sd) | train loss | epoch s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (ds, model, epochs, ntr, nte, source), rs in sorted(groups.items(), key=lambda kv: (kv[0][:5], kv[1][0]["bytes"] or 1e9)):
        acc = np.array([r["test_acc"] for r in rs])
        b, p = rs[0]["bytes"], rs[0]["psnr_test"]
        lines.append(
            f"| {ds} | {model} | {epochs} | {ntr}/{nte} | {source} | {'raw' if b is None else f'{b:.0f}'} | "
            f"{'-' if p is None else f'{p:.2f}'} | {len(rs)} | {acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} | "
            f"{np.mean([r['train_loss'] for r in rs]):.3f} | {np.mean([r['epoch_s'] for r in rs]):.1f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], dataset: str, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(6, 4))
    for family, marker in (("ndf", "o"), ("jpeg", "s"), ("webp", "^")):
        pts: dict[str, list] = {}
        for r in rows:
            if r["source"].startswith(family):
                pts.setdefault(r["source"], []).append(r)
        xy = sorted((np.mean([r["bytes"] for r in v]), np.mean([r["test_acc"] for r in v]), np.std([r["test_acc"] for r in v])) for v in pts.values())
        if xy:
            ax.errorbar([p[0] for p in xy], [p[1] for p in xy], yerr=[p[2] for p in xy], marker=marker, label=family.upper(), capsize=3)
    raw = [r["test_acc"] for r in rows if r["source"] == "images"]
    if raw:
        ax.axhline(np.mean(raw), color="k", ls="--", lw=1, label=f"original images ({np.mean(raw):.2f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image")
    ax.set_ylabel("test accuracy %")
    ax.set_title(f"{dataset}: accuracy of a classifier trained on decoded images")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    print(f"wrote {dest}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=["mnist", "cifar"])
    p.add_argument("--source", default="images")
    p.add_argument("--model", choices=["lenet", "cnn", "resnet18"], default=None, help="default: lenet (mnist), cnn (cifar)")
    p.add_argument("--epochs", type=int, default=None, help="default: 5 (mnist), 10 (cifar)")
    p.add_argument("--batch", type=int, default=None, help="default: 64 (mnist), 128 (cifar)")
    p.add_argument("--train", type=int, default=None, help="first N train images (default all)")
    p.add_argument("--test-count", type=int, default=None, help="first N test images (default: all for mnist, 1000 for cifar)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("experiments/out/classify.jsonl"))
    p.add_argument("--summary", action="store_true")
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    if args.summary or args.plot:
        rows = [json.loads(line) for line in args.out.read_text().splitlines()]
        if args.summary:
            print(summary(rows))
        if args.plot:
            plot(rows, args.dataset, args.plot)
        return
    mnist_ds = args.dataset == "mnist"
    model = args.model or ("lenet" if mnist_ds else "cnn")
    epochs = args.epochs or (5 if mnist_ds else 10)
    batch = args.batch or (64 if mnist_ds else 128)
    test_count = args.test_count or (None if mnist_ds else 1000)
    data = load(args.dataset, args.source, args.train, test_count)
    print(f"{args.source}: {len(data['train'][0])} train / {len(data['test'][0])} test, bytes {data['bytes']}, "
          f"PSNR test {data['psnr_test']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        result = train_eval(data, model, epochs, batch, seed, args.device, cosine=not mnist_ds)
        row = {
            "dataset": args.dataset, "model": model, "epochs": epochs, "batch": batch, "source": args.source, "seed": seed,
            "train": len(data["train"][0]), "test": len(data["test"][0]), "bytes": data["bytes"],
            "psnr_train": data["psnr_train"], "psnr_test": data["psnr_test"], "decode_s": data.get("decode_s"),
            "threads": torch.get_num_threads(), **result,
        }
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
