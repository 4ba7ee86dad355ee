"""The README's main job: encode an image that ships with a dependency, compare, decode at three sizes.

The image is ``grace_hopper.jpg`` from matplotlib's bundled sample data (no download). With the
zoo's ``natural`` base (shipped in the package) the demo encodes a compact record at the PSNR
target, prints its size beside Pillow's JPEG and WebP at the smallest quality that reaches the
same PSNR, decodes the record at 1/2, 1 and 2 times the size (PSNR against the area-downsampled
original, the original, and bicubic upsampling) and writes a PNG per size plus the record.
Without the zoo base (``--standalone``) it fits a standalone field instead (minutes).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import api
from ._output import save_png
from .codec import decode, load_base
from .codec.fitting import psnr as psnr_of
from .codec.images import to_tensor

__all__ = ["sample_image", "run_demo", "classic_at_psnr"]


def sample_image():
    """The bundled demo image (PIL, RGB), from matplotlib's sample data."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


def classic_at_psnr(image, target: float, fmt: str) -> tuple[int, float, int] | None:
    """The smallest Pillow ``fmt`` ("JPEG", "WEBP") file of ``image`` whose PSNR reaches ``target``:
    ``(bytes, psnr, quality)``, or ``None`` when even quality 100 does not."""
    from PIL import Image

    ref = np.asarray(image, dtype=np.float64)

    def at(q: int) -> tuple[int, float]:
        buf = io.BytesIO()
        image.save(buf, fmt, quality=q)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64)
        mse = np.mean((back - ref) ** 2)
        return len(buf.getvalue()), float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))

    lo, hi = 1, 100
    if at(hi)[1] < target:
        return None
    while lo < hi:  # PSNR grows with quality (near enough for a binary search)
        mid = (lo + hi) // 2
        if at(mid)[1] >= target:
            hi = mid
        else:
            lo = mid + 1
    size, quality = at(lo)
    return size, quality, lo


def _natural_base():
    try:
        return load_base("natural")
    except FileNotFoundError:
        return None


def run_demo(out: Path, psnr: float = 32.0, steps: int | None = None, force: bool = False, standalone: bool = False) -> dict:
    """Run the demo, writing into ``out``; returns the measured figures."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "grace_hopper.ndf"
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    image = sample_image()
    x = to_tensor(image)
    c, h, w = x.shape
    print(f"image: grace_hopper.jpg {w}x{h}, {w * h * c} raw bytes")
    base = None if standalone else _natural_base()
    t0 = time.time()
    if base is not None:
        blob, report = api.encode(image, psnr=psnr, base=base, return_report=True)
        reached = report.psnr[0]
        how = f"zoo base 'natural' ({len(base.to_bytes())} bytes, shipped once), level {report.levels[0]}"
    else:
        blob = api.encode(image, psnr=psnr, steps=steps, progress=True)
        reached = float(psnr_of(decode(blob)[None], x[None]))
        how = "standalone field"
    enc_s = time.time() - t0
    path.write_bytes(blob)
    print(f"encoded: {len(blob)} bytes ({8 * len(blob) / (h * w):.3f} bpp), {reached:.2f} dB, {how}, in {enc_s:.1f} s -> {path}")
    figures = {"bytes": len(blob), "psnr": reached, "encode_s": enc_s, "sizes": {}, "classic": {}}
    for fmt, name in (("JPEG", "JPEG"), ("WEBP", "WebP")):
        found = classic_at_psnr(image, reached, fmt)
        if found is None:
            print(f"{name}: no quality reaches {reached:.2f} dB")
            continue
        size, quality, q = found
        figures["classic"][name] = {"bytes": size, "psnr": quality, "quality": q}
        print(f"{name} at equal PSNR: {size} bytes ({size / len(blob):.2f}x the NDF record), q{q}, {quality:.2f} dB")
    for scale in (0.5, 1.0, 2.0):
        hh, ww = int(round(h * scale)), int(round(w * scale))
        t0 = time.time()
        y = decode(blob, size=(hh, ww), base=base)
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
