"""The ``ndf`` command line: ``encode``, ``decode``, ``info``, ``demo``.

Examples::

    ndf encode kodim23.png -o kodim23.ndf --psnr 30
    ndf decode kodim23.ndf -o big.png --size 1536x1024     # WIDTHxHEIGHT, like image tools
    ndf info kodim23.ndf
    ndf demo -o demo_out                                    # encode a bundled image, decode at 3 sizes

Outputs are never overwritten unless ``--force`` is given. Exit status: 0 ok, 1 an NDF or
input error (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from .errors import NDFError

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


def _check_out(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_png(tensor, path: Path, force: bool) -> None:
    from PIL import Image

    _check_out(path, force)
    arr = (tensor.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    Image.fromarray(arr[:, :, 0] if mode == "L" else arr, mode).save(tmp)
    os.replace(tmp, path)


def cmd_encode(args: argparse.Namespace) -> int:
    from PIL import Image

    from . import api
    from .shared import load_base

    out = Path(args.output or Path(args.input).with_suffix(".ndf"))
    _check_out(out, args.force)
    with Image.open(args.input) as im:
        im.load()
        image = im
    base = load_base(args.base) if args.base else None
    t0 = time.time()
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
    _atomic_write(out, blob)
    info = api.inspect(blob, str(out))
    print(f"{out}: {info['bytes']} bytes, {info['bpp']:.3f} bpp, {info['fit_psnr']:.2f} dB, {time.time() - t0:.1f} s")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from .decode import decode, read_bytes
    from .shared import load_base

    out = Path(args.output or Path(args.input).with_suffix(".png"))
    base = load_base(args.base) if args.base else None
    x = decode(read_bytes(args.input), size=args.size, base=base, device=args.device, source=args.input)
    _save_png(x, out, args.force)
    print(f"{out}: {x.shape[2]}x{x.shape[1]}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import api
    from . import format as fmt
    from .decode import read_bytes

    data = read_bytes(args.input)
    if args.json:
        print(json.dumps(api.inspect(data, args.input), indent=2, default=str))
    else:
        print(fmt.pretty(fmt.parse(data, args.input)))
        info = api.inspect(data, args.input)
        print(f"  bpp           {info['bpp']:.4f}")
        print(f"  decoder MACs  {info['macs_per_pixel']} per output pixel")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.output), psnr=args.psnr, steps=args.steps, force=args.force)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ndf", description="Neural Data Format: encode, decode and inspect .ndf files.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("encode", help="fit an image and write a .ndf file")
    e.add_argument("input", help="an image file (PNG, JPEG, ...)")
    e.add_argument("-o", "--output", help="output .ndf path (default: input with .ndf suffix)")
    e.add_argument("--psnr", type=float, default=35.0, help="target PSNR in dB (default 35)")
    e.add_argument("--steps", type=int, default=None, help="maximum fitting steps")
    e.add_argument("--base", help="a shared base (.ndfbase): write a record for it")
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
    d.add_argument("--base", help="the shared base, for records")
    d.add_argument("--device", default="cpu")
    d.add_argument("-f", "--force", action="store_true")
    d.set_defaults(func=cmd_decode)

    i = sub.add_parser("info", help="print a .ndf file's header")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser("demo", help="encode a bundled image, decode it at three sizes, write PNGs")
    m.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    m.add_argument("--psnr", type=float, default=32.0)
    m.add_argument("--steps", type=int, default=400)
    m.add_argument("-f", "--force", action="store_true")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (NDFError, FileExistsError, FileNotFoundError, IsADirectoryError, ValueError, OSError) as exc:
        print(f"ndf {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
