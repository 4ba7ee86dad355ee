"""``ndf train-base``: train a learned base (hours, resumable) from any source ``ndf convert`` reads.

Examples::

    ndf train-base raw/cifar-10-batches-py cifar10.ndfbase --arch hyper-field --steps 200000
    ndf train-base raw/mnist mnist.ndfbase --arch pixel-context --steps 20000
    ndf train-base cifar/ photos/ natural.ndfbase --crop 32 --crops-per-image 200   # several sources, any size

The training splits of every source are loaded into memory (uint8) and concatenated; images
larger than ``--crop N`` give ``--crops-per-image`` random N x N crops each, images of exactly
N x N are used once. ``--init`` starts from another run's checkpoint (weights only); ``--rate round`` fine-tunes
on the code length the coder really pays.
Checkpoints go to ``<OUT>.train/`` (``--checkpoint``); running the same command again resumes
exactly where the last checkpoint left off. The base is written only when training finishes
(or with ``--export-only`` from the last checkpoint).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ._output import check_out

__all__ = ["add_parser", "load_train_images"]


def load_train_images(srcs: list[str], split: str, crop: int | None, per_image: int, seed: int, limit: int | None = None):
    """The ``split`` of every source in ``srcs`` as one ``N x C x H x W`` uint8 tensor (random
    ``crop`` squares of larger images if given)."""
    import torch

    from .data import open_source

    rng = np.random.default_rng(seed)
    out = []
    for src in srcs:
        source = open_source(src)
        if split not in source.splits:
            raise ValueError(f"{src} has no {split!r} split (it has {list(source.splits)})")
        _take(source.splits[split], crop, per_image, rng, limit, out)
    if not out:
        raise ValueError(f"no training images from {srcs} (with --crop {crop}, images must be at least that large)")
    if len({a.shape for a in out}) > 1:
        raise ValueError(f"the images of {srcs} have different sizes or channels; give --crop N to train on N x N crops")
    return torch.from_numpy(np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2)))


def _take(s, crop: int | None, per_image: int, rng: np.random.Generator, limit: int | None, out: list) -> None:
    n = len(s) if limit is None else min(limit, len(s))
    for start in range(0, n, 1000):
        for im in s.images(start, min(n, start + 1000)):
            arr = im if im.ndim == 3 else im[..., None]
            h, w = arr.shape[:2]
            if crop is None or (h, w) == (crop, crop):
                out.append(arr)
                continue
            if h < crop or w < crop:
                continue
            for _ in range(per_image):
                i, j = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
                out.append(arr[i : i + crop, j : j + crop])


def cmd_train_base(args: argparse.Namespace) -> int:
    import torch

    from .codec.training import TrainSettings, base_from_checkpoint, train_base

    out = Path(args.out)
    check_out(out, args.force)
    ckpt = Path(args.checkpoint or f"{out}.train")
    config = tuple(int(v) for v in args.config.split(",")) if args.config else None
    provenance = {"data": [str(d) for d in args.data], "split": args.split, "crop": args.crop, "notes": args.notes or ""}
    if args.export_only:
        images = load_train_images(args.data[:1], args.split, args.crop, 1, args.seed, limit=1)
        base = base_from_checkpoint(ckpt / "ckpt.pt", images.shape[2], images.shape[3], images.shape[1], provenance)
    else:
        t0 = time.time()
        images = load_train_images(args.data, args.split, args.crop, args.crops_per_image, args.seed)
        eval_images = None
        if args.eval_split:
            eval_images = load_train_images(args.data[:1], args.eval_split, args.crop, 1, args.seed + 1, limit=args.eval_count)
        settings = TrainSettings(
            arch=args.arch, config=config, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            lmbda=tuple(args.lmbda), seed=args.seed, flips=args.arch == "hyper-field" and not args.no_flips,
            rate=args.rate,
            distortion=args.distortion,
            soft_round=args.soft_round,
        )
        print(f"training {args.arch} on {images.shape[0]} images of {tuple(images.shape[1:])} for {args.steps} steps "
              f"(checkpoints in {ckpt}, {torch.get_num_threads()} threads)")
        base = train_base(
            images, settings, checkpoint_dir=ckpt, checkpoint_minutes=args.checkpoint_minutes, eval_images=eval_images,
            eval_every=args.eval_every, device=args.device, progress=not args.quiet, metadata=provenance,
            init_checkpoint=args.init,
        )
        print(f"trained in {time.time() - t0:.0f} s")
    if args.calibrate > 0 and base.arch.name == "hyper-field":
        from .codec.calibrate import calibrate_scales

        if args.export_only:  # only one image was loaded
            images = load_train_images(args.data, args.split, args.crop, 1, args.seed, limit=args.calibrate)
        base = calibrate_scales(base, images[: args.calibrate].float() / 255, progress=not args.quiet)
    base.save(out, overwrite=args.force)
    print(f"{out}: {len(base.to_bytes())} bytes, hash {base.hash.hex()}, {base.arch.name} {list(base.arch.config)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train-base",
        help="train a learned shared base (hyper-field / pixel-context), resumably",
        description="Train a learned base on the training split of DATA (any source ndf convert reads). "
        "Re-running the same command resumes from the last checkpoint, bit for bit.",
    )
    t.add_argument("data", nargs="+", help="source folders or URLs (MNIST/CIFAR-10 raw copy, ImageFolder)")
    t.add_argument("out", help="the .ndfbase to write")
    t.add_argument("--init", default=None, help="start from the weights of this train-base checkpoint (ckpt.pt); layers --config "
                   "makes wider start as the same network, a narrower synthesis (Ns) keeps its strongest channels, "
                   "residual predictors are dropped for lrp=0")
    t.add_argument("--arch", choices=["hyper-field", "pixel-context"], default="hyper-field")
    t.add_argument("--config", default=None, help="comma-separated architecture config values (default: its defaults)")
    t.add_argument("--steps", type=int, default=200_000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lmbda", type=float, nargs=2, default=[0.007, 1.0], metavar=("LOW", "HIGH"),
                   help="rate-distortion weights of the lowest and highest rate level (hyper-field)")  # fmt: skip
    t.add_argument("--rate", choices=["noise", "round"], default="noise",
                   help="hyper-field rate term: additive-noise proxy (default) or the rounded symbols' code length "
                   "(what the coder pays; a fine-tuning stage with --init: analysis and steps frozen)")  # fmt: skip
    t.add_argument("--distortion", choices=["mse", "psnr"], default="mse",
                   help="hyper-field distortion term: MSE (default) or log-MSE at the level's scale, i.e. mean PSNR")  # fmt: skip
    t.add_argument("--soft-round", type=float, default=0.0,
                   help="hyper-field: soft-round the synthesis input, sharpness annealed from this to 64 (0: off)")  # fmt: skip
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split", default="train", help="the split to train on (default train)")
    t.add_argument("--crop", type=int, default=None, help="train on random N x N crops (images of any size)")
    t.add_argument("--crops-per-image", type=int, default=1)
    t.add_argument("--no-flips", action="store_true", help="no random horizontal flips")
    t.add_argument("--eval-split", default=None, help="evaluate on this split of the first source every --eval-every steps")
    t.add_argument("--eval-count", type=int, default=500)
    t.add_argument("--eval-every", type=int, default=10_000)
    t.add_argument("--checkpoint", default=None, help="checkpoint folder (default OUT.train)")
    t.add_argument("--checkpoint-minutes", type=float, default=5.0)
    t.add_argument("--export-only", action="store_true", help="write the base of the last checkpoint and stop")
    t.add_argument("--calibrate", type=int, default=1000, metavar="N",
                   help="hyper-field: fit the coded scales to the rounded symbols of the first N training images "
                        "(~1%% fewer bytes at low rates; 0: off; default 1000)")
    t.add_argument("--notes", default=None, help="free text stored in the base's metadata (data provenance)")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("-q", "--quiet", action="store_true")
    t.add_argument("-f", "--force", action="store_true", help="overwrite OUT")
    t.set_defaults(func=cmd_train_base)
