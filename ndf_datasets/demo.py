"""The README's main job: encode an image that ships with a dependency, decode it at three sizes.

The image is ``grace_hopper.jpg`` from matplotlib's bundled sample data (no download). The demo
prints the file size, bits per pixel, the PSNR against the original (at full size) and against
area-downsampled originals (at the smaller sizes), and writes a PNG per size.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import api
from ._output import save_png
from .codec import decode
from .codec.fitting import psnr as psnr_of
from .codec.images import to_tensor

__all__ = ["sample_image", "run_demo"]


def sample_image():
    """The bundled demo image (PIL, RGB), from matplotlib's sample data."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


def run_demo(out: Path, psnr: float = 32.0, steps: int | None = None, force: bool = False) -> dict:
    """Run the demo, writing into ``out``; returns the measured figures."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "grace_hopper.ndf"
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    image = sample_image()
    x = to_tensor(image)
    c, h, w = x.shape
    print(f"image: grace_hopper.jpg {w}x{h}, {w * h * c} raw bytes")
    t0 = time.time()
    blob = api.encode(image, psnr=psnr, steps=steps, progress=True)
    enc_s = time.time() - t0
    path.write_bytes(blob)
    print(f"encoded: {len(blob)} bytes ({8 * len(blob) / (h * w):.3f} bpp) in {enc_s:.1f} s -> {path}")
    figures = {"bytes": len(blob), "encode_s": enc_s, "sizes": {}}
    for scale in (0.5, 1.0, 2.0):
        hh, ww = int(round(h * scale)), int(round(w * scale))
        t0 = time.time()
        y = decode(blob, size=(hh, ww))
        dec_s = time.time() - t0
        if scale <= 1.0:
            ref = F.interpolate(x[None], size=(hh, ww), mode="area")
            quality = f"PSNR {float(psnr_of(y[None], ref)):.2f} dB vs the {'original' if scale == 1 else 'area-downsampled original'}"
        else:
            ref = F.interpolate(x[None], size=(hh, ww), mode="bicubic", align_corners=False).clamp(0, 1)
            quality = f"PSNR {float(psnr_of(y[None], ref)):.2f} dB vs bicubic upsampling of the original"
        png = out / f"grace_hopper_{ww}x{hh}.png"
        save_png(y, png, force)
        print(f"decoded {ww}x{hh} in {dec_s:.2f} s: {quality} -> {png}")
        figures["sizes"][f"{ww}x{hh}"] = quality
    return figures


if __name__ == "__main__":  # pragma: no cover
    torch.manual_seed(0)
    run_demo(Path("demo_out"))
