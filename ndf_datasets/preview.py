"""``ndf preview OUT -o preview.png``: a montage of a converted dataset, to see what it holds at a glance.

One row per sample (evenly spaced over the split): the source image when ``--source`` is
given, then the record decoded at 1/2, 1x and 2x its size (the field is continuous: 2x is
rendered, not upsampled), each labelled with its key, PSNR and bytes; below them the
histograms of every image's PSNR and record bytes (the conversion's measurements, from
``stats/``). Images are read through :class:`~ndf_datasets.data.NDFShardDataset` (random
access: only the shown records are fetched), so OUT may be a URL. Needs matplotlib
(``pip install 'ndf-datasets[plot]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._output import check_out
from .data import NDFShardDataset
from .data._store import Store
from .data.sources import open_source

__all__ = ["preview"]


def _stats(ds: NDFShardDataset) -> tuple[list[float], list[int]]:
    psnr: list[float] = []
    nbytes: list[int] = []
    for entry in ds.units:
        raw = ds.store.read(entry["stats"], limit=1 << 28)
        if raw is None:
            raise FileNotFoundError(f"{ds.store.path(entry['stats'])}: a statistics file the manifest lists is missing")
        st = json.loads(raw)
        psnr += [float(v) for v in st.get("psnr", []) if v is not None]
        nbytes += [int(v) for v in st.get("bytes", [])]
    return psnr, nbytes


def _pixels(x: Any) -> np.ndarray:
    arr = x.clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return arr[..., 0] if arr.shape[2] == 1 else arr


def preview(
    location: str | os.PathLike,
    output: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    split: str | None = None,
    n: int = 6,
    storage_options: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Draw the montage of a conversion at ``location`` into the PNG ``output``.

    Args:
        location: the conversion's output folder or URL.
        output: the PNG to write (refused if it exists, unless ``force``).
        source: the source that was converted (the same SRC as for ``ndf convert``), to show
            the originals beside the decodes; its kind and mode are taken from the manifest.
        split: the split to show (default: the first one).
        n: how many samples (rows).
        storage_options: fsspec options for URLs (``location`` and ``source``).
        force: overwrite ``output``.

    Raises:
        FileExistsError: ``output`` exists and ``force`` is false.
        FileNotFoundError: no conversion at ``location``.
        ValueError: no such split, or ``n`` < 1.
        ImportError: matplotlib is not installed.

    Returns:
        The path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib comes with the plot extra
        raise ImportError("ndf preview needs matplotlib: pip install 'ndf-datasets[plot]'") from None
    out = Path(output)
    check_out(out, force)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    manifest = json.loads(Store(location, storage_options).read("ndf_dataset.json", limit=1 << 28) or b"{}")
    splits = list(manifest.get("splits", {}))
    if not splits:
        raise FileNotFoundError(f"{location}: no ndf_dataset.json with splits; is it a folder ndf convert wrote?")
    split = split or ("train" if "train" in splits else splits[0])
    native = NDFShardDataset(location, split, storage_options=storage_options)
    n = min(n, len(native))
    picks = sorted({round(k * (len(native) - 1) / max(n - 1, 1)) for k in range(n)})
    psnr, nbytes = _stats(native)
    originals = None
    if source is not None:
        build = manifest.get("build", {})
        src = open_source(source, storage_options, kind=manifest.get("source", {}).get("kind"), mode=build.get("mode"))
        if split not in src.splits:
            raise ValueError(f"the source {source} has no split {split!r}")
        originals = [src.splits[split].images(i, i + 1)[0] for i in picks]
    columns = (["original"] if originals is not None else []) + ["1/2x", "1x", "2x"]
    fig = plt.figure(figsize=(1.9 * len(columns) + 0.6, 1.9 * len(picks) + 2.6), dpi=110)
    grid = fig.add_gridspec(len(picks) + 1, len(columns), height_ratios=[1.0] * len(picks) + [1.2], hspace=0.45)
    for r, i in enumerate(picks):
        x, label = native[i]
        h, w = x.shape[1:]
        images = [] if originals is None else [originals[r][..., 0] if originals[r].shape[2] == 1 else originals[r]]
        images += [_pixels(NDFShardDataset(location, split, size=(max(1, h // 2), max(1, w // 2)),
                                           storage_options=storage_options)[i][0]),
                   _pixels(x), _pixels(NDFShardDataset(location, split, size=(2 * h, 2 * w),
                                                       storage_options=storage_options)[i][0])]  # fmt: skip
        for c, (img, title) in enumerate(zip(images, columns)):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if img.dtype == np.uint8 else 1,
                      interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title} ({img.shape[0]}x{img.shape[1]})" if r == 0 else "", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{native.key(i)} · {label}\n{psnr[i]:.1f} dB · {nbytes[i]} B", fontsize=7)
    half = max(1, len(columns) // 2)
    for k, (values, what) in enumerate(((psnr, "PSNR (dB)"), (nbytes, "record bytes"))):
        ax = fig.add_subplot(grid[len(picks), k * half : (k + 1) * half if k == 0 else len(columns)])
        ax.hist(values, bins=30, color=("tab:blue", "tab:orange")[k])
        ax.set_xlabel(what, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(f"{split}: {len(values)} images, mean {np.mean(values):.2f}" if values else "", fontsize=8)
    fig.suptitle(f"{manifest.get('name')} ({split}): NDF records decoded at 1/2, 1 and 2x", fontsize=9)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, out)
    return out
