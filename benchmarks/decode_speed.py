"""Batch-decode (and fit) throughput, images/s, at 32x32, 28x28 and 256x256 on CPU (or --device).

    python -m benchmarks.decode_speed --device cpu --base cifar.ndfbase mnist.ndfbase --fit

With ``--fit`` each row also times fitting (``encode_batch``: the whole pipeline from images to
bytes) of ``--fit-count`` images: records of a base with ``--fit-steps`` refinement steps, or
standalone fields to a 30 dB target.

Measures ``ndf.decode_batch`` end to end (parse + CRC + entropy decoding + one batched
forward), and the render-only part (``render_fields`` on already-read fields, which is what a
DataLoader with deferred decoding pays in the main process). Images are synthetic: decode cost
does not depend on content, only on the architecture and size. For 256x256, 16 distinct fields
are encoded and repeated to fill the batch (each is still parsed and decoded independently).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import ndf_datasets as ndf


def _images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        f = rng.uniform(1, 4, size=(3, 2))
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy)) for c in range(3)], -1)
        out.append((img * 255).astype(np.uint8))
    return out


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _fit_rate(images: list, base, steps: int, device: str) -> float:
    t0 = time.perf_counter()
    if base is None:
        ndf.encode_batch(images, psnr=30.0, steps=steps, device=device)
    else:
        ndf.encode_batch(images, base=base, psnr=None, steps=steps, device=device)
    return len(images) / (time.perf_counter() - t0)


def measure(
    kind: str, size: int, batch: int, device: str, repeat: int, base_path: str | None = None, fit: int = 0, fit_steps: int = 20
) -> dict:
    base = None
    if kind == "record":
        if base_path:
            base = ndf.load_base(base_path)
        else:
            base = ndf.fit_base(_images(64, size, seed=1), epochs=2, batch_size=64, progress=False)
        distinct = ndf.encode_batch([im[..., : base.arch.channels] for im in _images(64, size)], base=base, psnr=None, steps=30)
    else:
        distinct = ndf.encode_batch(_images(16, size), psnr=None, steps=30)
    fit_rate = None
    if fit:
        channels = base.arch.channels if base is not None else 3
        images = [im[..., :channels] for im in _images(fit, size, seed=2)]
        fit_rate = _fit_rate(images, base, fit_steps if base is not None else 400, device)
    blobs = [distinct[i % len(distinct)] for i in range(batch)]
    fields = [ndf.read_field(b, base) for b in blobs]
    full = _time(lambda: ndf.decode_batch(blobs, base=base, device=device), repeat)
    read = _time(lambda: [ndf.read_field(b, base) for b in blobs], repeat)
    render = _time(lambda: ndf.render_fields(fields, device=device), repeat)
    return {
        "kind": kind if base_path is None else f"record ({base.arch.name} base)",
        "size": size,
        "batch": batch,
        "device": device,
        "threads": torch.get_num_threads(),
        "bytes_per_image": float(np.mean([len(b) for b in distinct])),
        "macs_per_pixel": ndf.inspect(blobs[0])["macs_per_pixel"],
        "decode_batch_img_per_s": batch / full,
        "read_img_per_s": batch / read,
        "render_img_per_s": batch / render,
        "fit_img_per_s": fit_rate,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--base", nargs="*", default=[], help="also measure records of these saved bases (e.g. trained CIFAR / MNIST bases)")
    p.add_argument("--fit", action="store_true", help="also time fitting")
    p.add_argument("--fit-count", type=int, default=512, help="images fitted per case (16 at 256x256)")
    p.add_argument("--fit-steps", type=int, default=20, help="refinement steps for records")
    args = p.parse_args()
    rows = []
    cases = [("field", 32, None), ("record", 32, None)]
    for path in args.base:
        cases.append(("record", ndf.load_base(path).arch.height, path))
    cases.append(("field", 256, None))
    for kind, size, base_path in cases:
        count = 0 if not args.fit else (16 if size >= 128 else args.fit_count)
        row = measure(kind, size, args.batch, args.device, args.repeat, base_path, count, args.fit_steps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| kind | size | batch | MACs/px | B/img | decode_batch img/s | read-only img/s | render-only img/s | fit img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['size']}x{r['size']} | {r['batch']} | {r['macs_per_pixel']} | {r['bytes_per_image']:.0f} | "
            f"{r['decode_batch_img_per_s']:.0f} | {r['read_img_per_s']:.0f} | {r['render_img_per_s']:.0f} | "
            f"{'-' if r['fit_img_per_s'] is None else format(r['fit_img_per_s'], '.1f')} |"
        )


if __name__ == "__main__":
    main()
