"""The ``ndf`` command line: ``encode``, ``decode``, ``info``, ``demo``, ``convert``, ``preview``, ``train-base``.

Examples::

    ndf encode kodim23.png -o kodim23.ndf --psnr 30
    ndf decode kodim23.ndf -o big.png --size 1536x1024     # WIDTHxHEIGHT, like image tools
    ndf info kodim23.ndf
    ndf demo -o demo_out                                    # encode a bundled image, decode at 3 sizes
    ndf convert raw/mnist out/mnist                         # a dataset -> zoo base records in WebDataset shards (resumable)
    ndf convert raw/mnist out/mnist-pq --format parquet     # ... or Parquet shards for HF datasets
    ndf convert raw/cifar c10 --base cifar10 --engine ray   # ... on Ray Data (local, or --ray-address auto)
    ndf info out/mnist                                      # a converted dataset: bytes on disk per image
    ndf preview out/mnist -o preview.png --source raw/mnist # originals beside decodes at 1/2, 1, 2x; histograms
    ndf encode photo.png --base natural --psnr 36           # a compact record of a zoo base
    ndf train-base raw/cifar-10-batches-py c10.ndfbase      # train a learned base (hours; resumable)

Outputs are never overwritten unless ``--force`` is given. Exit status: 0 ok, 1 an NDF or
input error (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ._output import check_out, save_png
from .codec import NDFError

__all__ = ["main", "parse_size"]


def parse_size(text: str) -> tuple[int, int] | int:
    """``"WxH"`` -> ``(H, W)``; ``"N"`` -> ``N`` (square)."""
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(h), int(w)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT or N, got {text!r}") from None


def cmd_encode(args: argparse.Namespace) -> int:
    from PIL import Image

    from . import api
    from .codec import load_base, write_atomic

    out = Path(args.output or Path(args.input).with_suffix(".ndf"))
    check_out(out, args.force)
    with Image.open(args.input) as im:
        im.load()
        image = im
    base = load_base(args.base) if args.base else None
    t0 = time.time()
    if base is not None and getattr(base.arch, "learned", False):
        blob, report = api.encode(image, psnr=None if args.level is not None else args.psnr, base=base, label=args.label,
                                  level=args.level, device=args.device, return_report=True)
        write_atomic(out, blob)
        info = api.inspect(blob, str(out), base=base)
        print(f"{out}: {info['bytes']} bytes, {info['bpp']:.3f} bpp, {report.psnr[0]:.2f} dB (level {report.levels[0]}), "
              f"{time.time() - t0:.1f} s")
        return 0
    blob = api.encode(
        image,
        psnr=args.psnr,
        base=base,
        label=args.label,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    write_atomic(out, blob)
    info = api.inspect(blob, str(out))
    print(f"{out}: {info['bytes']} bytes, {info['bpp']:.3f} bpp, {info['fit_psnr']:.2f} dB, {time.time() - t0:.1f} s")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from .codec import decode, load_base, read_bytes

    out = Path(args.output or Path(args.input).with_suffix(".png"))
    base = load_base(args.base) if args.base else None
    x = decode(read_bytes(args.input), size=args.size, base=base, device=args.device, source=args.input)
    save_png(x, out, args.force)
    print(f"{out}: {x.shape[2]}x{x.shape[1]}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if not Path(args.input).is_file():  # a folder / URL that ndf convert wrote: its footprint
        from .data.footprint import dataset_info, format_info, is_dataset

        if is_dataset(args.input):
            info = dataset_info(args.input)
            print(json.dumps(info, indent=2) if args.json else format_info(info))
            return 0
    from . import api
    from .codec import format as fmt
    from .codec import load_base, read_bytes
    from .codec.record import is_compact

    data = read_bytes(args.input)
    base = load_base(args.base) if args.base else None
    if args.json or is_compact(data):
        info = api.inspect(data, args.input, base=base)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            print(f"{args.input}: {info['bytes']} bytes (compact record)")
            for k, v in info.items():
                if k != "bytes":
                    print(f"  {k:<15} {v}")
            if not info["verified"]:
                print("  (pass --base to check its CRC and see its architecture)")
    else:
        print(fmt.pretty(fmt.parse(data, args.input)))
        info = api.inspect(data, args.input)
        print(f"  bpp           {info['bpp']:.4f}")
        print(f"  decoder MACs  {info['macs_per_pixel']} per output pixel")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), psnr=args.psnr, steps=args.steps, force=args.force, standalone=args.standalone)
    return 0


def _psnr_arg(text: str) -> float | str:
    """``--psnr``: a number in dB, or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--psnr takes a number of dB or 'auto', not {text!r}") from None


def cmd_convert(args: argparse.Namespace) -> int:
    from .api import convert

    src = args.src[0] if len(args.src) == 1 else args.src
    options = json.loads(args.storage_options) if args.storage_options else None
    if options is not None and not isinstance(options, dict):
        raise ValueError("--storage-options must be a JSON object")
    result = convert(
        src,
        args.out,
        layout=args.format,
        members=args.members.split(",") if args.members else (),
        compress=not args.no_compress,
        psnr=args.psnr,
        mean_psnr=args.mean_psnr,
        min_psnr=args.min_psnr,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        max_images=args.max_images,
        splits=args.splits.split(",") if args.splits else None,
        mode=args.mode,
        early_stop=not args.no_early_stop,
        base=None if args.base == "fit" else args.base,
        base_arch=args.base_arch,
        base_epochs=args.base_epochs,
        base_lmbda=args.base_lmbda,
        base_batch_size=args.base_batch_size,
        base_max_images=args.base_max_images,
        kind=args.kind,
        storage_options=options,
        force=args.force,
        progress=not args.quiet,
        **({"dist_timeout": args.dist_timeout} if args.engine == "local" else {}),
        engine=args.engine,
        **({"ray_address": args.ray_address, "ray_concurrency": args.ray_concurrency} if args.engine == "ray" else {}),
    )
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    line = (
        f"{result.out}: {counts} images, base {result.base_hash}; encoded {result.encoded} here "
        f"({result.images_per_s:.1f} images/s), kept {result.skipped} finished shards, {result.seconds:.1f} s"
    )
    if result.manifest is not None:
        st = result.manifest["stats"]
        line += f"; mean {st['psnr']['mean']:.2f} dB, {st['bytes']['mean']:.1f} bytes/image ({st['bpp']:.3f} bpp)"
        if st.get("below_target"):
            target = result.manifest.get("build", {}).get("psnr", args.psnr)
            line += f"; {st['below_target']} images below the {target:g} dB target (the base's best level; see below_target in the manifest)"
    print(line)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import preview

    options = json.loads(args.storage_options) if args.storage_options else None
    out = preview(args.input, args.output, source=args.source, split=args.split, n=args.n, storage_options=options,
                  force=args.force)  # fmt: skip
    print(f"{out}: {args.n} samples of {args.input}")
    return 0


def _add_preview(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("preview", help="draw a montage of a converted dataset: decodes at 1/2, 1 and 2x, PSNR/bytes histograms")
    v.add_argument("input", help="a folder or URL that ndf convert wrote")
    v.add_argument("-o", "--output", default="preview.png", help="the PNG to write (default preview.png)")
    v.add_argument("--source", default=None, help="the converted source (SRC of ndf convert): show the originals too")
    v.add_argument("--split", default=None, help="the split to show (default: the first)")
    v.add_argument("-n", type=int, default=6, help="samples to show (default 6)")
    v.add_argument("--storage-options", default=None, help="fsspec options as JSON")
    v.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    v.set_defaults(func=cmd_preview)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "convert",
        help="convert a dataset (MNIST/CIFAR-10 raw copy, ImageFolder, image files) to NDF shards",
        description="Fit a shared base on the training split, then encode every split as records into "
        "compact WebDataset shards (.tar.gz; or Parquet shards, or one .ndf per image). Re-running the same command resumes an interrupted "
        "conversion; under torchrun each rank converts its share of the shards. "
        "Arguments can be read from a file: ndf convert @args.txt",
        fromfile_prefix_chars="@",
    )
    c.add_argument("src", nargs="+", help="source folder or URL (or several image files)")
    c.add_argument("out", help="output folder or URL (s3://bucket/prefix)")
    c.add_argument("--format", "--layout", dest="format", choices=["webdataset", "parquet", "files"], default="webdataset",
                   help="output layout: WebDataset tar shards (default), Parquet shards (HF datasets), or one .ndf "
                   "file per image in class folders (NDFImageFolder); --layout is the older name")  # fmt: skip
    c.add_argument("--members", default=None,
                   help="per-sample extras besides the record: cls, json or cls,json (default: none, the label is "
                   "inside the record)")  # fmt: skip
    c.add_argument("--no-compress", action="store_true",
                   help="plain .tar shards instead of .tar.gz (uncompressed Parquet pages)")  # fmt: skip
    c.add_argument("--psnr", type=_psnr_arg, default="auto",
                   help="target PSNR of the records in dB (default auto: the zoo base's checked point, "
                   "cifar10 40, mnist 46, natural 36; 30 for a fitted base)")  # fmt: skip
    c.add_argument("--mean-psnr", action="store_true",
                   help="learned bases: --psnr is each batch's mean, met at the fewest bytes (6-8%% smaller "
                   "records on CIFAR-10; single images fall below it) instead of every image's floor")  # fmt: skip
    c.add_argument("--min-psnr", type=float, default=None, help="with --mean-psnr: no image below this PSNR (a floor)")
    c.add_argument("--steps", type=int, default=20, help="maximum refinement steps per record (default 20)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu", help="fitting device (cpu, cuda; under torchrun cuda:LOCAL_RANK)")
    c.add_argument("--batch-size", type=int, default=256, help="images per encode batch (default 256)")
    c.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
    c.add_argument("--max-images", type=int, default=None, help="convert only the first N images of each split")
    c.add_argument("--splits", default=None, help="comma-separated splits to convert (default: all)")
    c.add_argument("--mode", choices=["L", "RGB", "RGBA"], default=None, help="convert image files to this mode")
    c.add_argument("--no-early-stop", action="store_true", help="keep optimising each record (smaller, slower)")
    c.add_argument("--kind", choices=["mnist", "cifar10-bin", "cifar10-py", "imagefolder"], default=None,
                   help="source kind (default: detected)")  # fmt: skip
    c.add_argument("--base", default="auto",
                   help="auto (default): the zoo base for the source (MNIST: mnist, CIFAR-10: cifar10, RGB images: "
                   "natural); fit: fit a version-1 base on the training split; or a .ndfbase / zoo name")  # fmt: skip
    c.add_argument("--base-arch", choices=["grid-mlp", "conv-field"], default="conv-field")
    c.add_argument("--base-epochs", type=int, default=12, help="base fitting epochs (default 12)")
    c.add_argument("--base-batch-size", type=int, default=128)
    c.add_argument("--base-lmbda", type=float, default=4e-4, help="base rate weight (default 4e-4; larger: smaller records)")
    c.add_argument("--base-max-images", type=int, default=None, help="fit the base on the first N training images")
    c.add_argument("--storage-options", default=None, help="fsspec options as JSON, e.g. for an S3 endpoint")
    c.add_argument("--dist-timeout", type=float, default=10800.0, help="seconds a torchrun rank waits for the others")
    c.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (or torchrun ranks); ray: a Ray Data job (same files, byte for byte)")  # fmt: skip
    c.add_argument("--ray-address", default=None, help="--engine ray: the cluster (auto, ray://head:10001); default: a local one")
    c.add_argument("--ray-concurrency", type=int, default=None, help="--engine ray: encoding actors (default: one per CPU)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    c.add_argument("-f", "--force", action="store_true", help="start over in an OUT that holds other files")
    c.set_defaults(func=cmd_convert)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ndf", description="Neural Data Format: encode, decode and inspect .ndf files.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encode", help="fit an image and write a .ndf file")
    e.add_argument("input", help="an image file (PNG, JPEG, ...)")
    e.add_argument("-o", "--output", help="output .ndf path (default: input with .ndf suffix)")
    e.add_argument("--psnr", type=float, default=35.0, help="target PSNR in dB (default 35)")
    e.add_argument("--steps", type=int, default=None, help="maximum fitting steps")
    e.add_argument("--base", help="a shared base (.ndfbase, or a zoo name: cifar10, mnist, natural): write a record for it")
    e.add_argument("--level", type=int, default=None, help="learned bases: a fixed rate level instead of --psnr")
    e.add_argument("--label", type=int, default=None, help="an integer label to store")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="cpu")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="render a .ndf file to PNG at any size")
    d.add_argument("input")
    d.add_argument("-o", "--output", help="output PNG (default: input with .png suffix)")
    d.add_argument("--size", type=parse_size, default=None, help="WIDTHxHEIGHT or N (default: original size)")
    d.add_argument("--base", help="the shared base (path or zoo name), for records")
    d.add_argument("--device", default="cpu")
    d.add_argument("-f", "--force", action="store_true")
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="print a .ndf file's header, or a converted dataset's bytes on disk per image")
    i.add_argument("input", help="a .ndf / .ndfbase file, or a folder or URL that ndf convert wrote")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--base", help="the base of a compact record (path or zoo name): check it and show more")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("demo", help="encode a bundled image, compare with JPEG/WebP, decode it at three sizes, write PNGs")
    m.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    m.add_argument("--psnr", type=float, default=32.0)
    m.add_argument("--steps", type=int, default=400, help="fitting steps of --standalone")
    m.add_argument("--standalone", action="store_true", help="fit a standalone field instead of using the zoo's natural base")
    m.add_argument("-f", "--force", action="store_true")
    m.set_defaults(func=cmd_demo)

    _add_convert(sub)
    _add_preview(sub)
    from .train_cmd import add_parser as _add_train

    _add_train(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (NDFError, FileExistsError, FileNotFoundError, IsADirectoryError, ValueError, OSError, RuntimeError) as exc:
        print(f"ndf {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
