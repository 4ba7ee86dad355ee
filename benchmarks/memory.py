"""Resident memory over epochs of deferred decoding: does anything accumulate?

    python -m benchmarks.memory --path torchvision --images 2048 --epochs 10 --workers 2
    python -m benchmarks.memory --path webdataset --images 2048 --epochs 10 --workers 2

``torchvision``: ``NDFImageFolder(deferred=True)`` + ``ndf_collate`` in a DataLoader, each
batch rendered with ``NDFBatch.decode`` in the main process. ``webdataset``:
``epoch_dataset(...).decode(ndf_read())`` batched in a DataLoader, rendered with
``ndf_batch_decode``. Both loaders are created once, with persistent workers. The images are records of one shared base (the layout of a converted
dataset). After every epoch: ``gc.collect()``, then the resident set size (RSS, from
``/proc/<pid>/statm``) of the main process and of the DataLoader workers (persistent, so
they live through all epochs), the main process's bytes in use from malloc (``mallinfo2``:
exact, unlike RSS, which a small leak does not move while the allocator has free holes),
and CUDA's allocated / reserved bytes when rendering on a GPU. Growth is measured from the end of epoch 1 (allocators and caches warmed up) to the
end of the last epoch. ``--leak`` keeps every rendered batch: a control that shows the
measurement sees a leak of that size. Writes ``benchmarks/out/memory-<path>.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import ndf_datasets as ndf

OUT = Path(__file__).resolve().parent / "out"
PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip


def malloc_in_use() -> int | None:
    """Bytes in use from glibc's malloc (main arena + mmapped chunks; ``mallinfo2``), or ``None``.

    RSS can not see a small leak while the allocator still has free memory from earlier
    peaks to hand out (a leak first fills those holes); in-use bytes see it at once.
    Allocations in other threads' arenas are not counted.
    """
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from ``/proc/<pid>/statm``."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def children(pid: int | None = None) -> list[int]:
    """Direct child processes (DataLoader workers) of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def make_dataset(root: Path, images: int, side: int = 16, classes: int = 4, seed: int = 0) -> Path:
    """An ImageFolder tree of records (``root/folder/<class>/<i>.ndf``) plus WebDataset shards of
    the same records (``root/shards``), and their base next to both."""
    from ndf_datasets.integrations.webdataset import write_shards

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (images, side, side, 3), dtype=np.uint8)
    base = ndf.fit_base(pixels[: min(64, images)], epochs=1, batch_size=64, progress=False, seed=seed)
    labels = [i % classes for i in range(images)]
    blobs = ndf.encode_batch(list(pixels), psnr=None, base=base, steps=2, labels=labels, batch_size=512)
    for c in range(classes):
        (root / "folder" / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i, (blob, label) in enumerate(zip(blobs, labels)):
        (root / "folder" / f"c{label}" / f"{i:06d}.ndf").write_bytes(blob)
    base.save(root / "folder" / ndf.base_filename(base.hash))
    write_shards(str(root / "shards" / "train-%06d.tar"), ({"ndf": b, "cls": c} for b, c in zip(blobs, labels)),
                 maxcount=max(1, images // 8), base=base)  # fmt: skip
    return root


def _loader(path: str, root: Path, batch: int, workers: int, epoch: int, size: int) -> Any:
    from torch.utils.data import DataLoader

    if path == "torchvision":
        from ndf_datasets.integrations.torchvision import NDFImageFolder, ndf_collate

        ds = NDFImageFolder(str(root / "folder"), size=size, deferred=True)
        return DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=ndf_collate, shuffle=True,
                          persistent_workers=workers > 0, generator=torch.Generator().manual_seed(epoch))  # fmt: skip
    from ndf_datasets.integrations.webdataset import epoch_dataset, ndf_read

    urls = sorted(str(p) for p in (root / "shards").glob("*.tar"))
    reader = ndf_read(base_locations=[str(root / "shards")])
    ds = epoch_dataset(urls, seed=0, epoch=epoch).decode(reader).to_tuple("ndf", "cls").batched(batch)
    return DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=workers > 0)


def measure(
    root: Path,
    path: str = "torchvision",
    epochs: int = 10,
    batch: int = 64,
    workers: int = 0,
    size: int = 16,
    device: str = "cpu",
    leak: bool = False,
) -> dict[str, Any]:
    """Run ``epochs`` epochs; returns per-epoch RSS (main, workers) and CUDA memory."""
    from ndf_datasets.integrations.webdataset import ndf_batch_decode

    render = ndf_batch_decode(size, device)
    kept: list[torch.Tensor] = []
    main, work, in_use, cuda_alloc, cuda_reserved, samples = [], [], [], [], [], []
    loader = _loader(path, root, batch, workers, 0, size)
    start = time.perf_counter()
    for epoch in range(epochs):
        n = 0
        for b in loader:
            x = b.decode(device) if path == "torchvision" else render(b)[0]
            n += x.shape[0]
            float(x.sum())
            if leak:
                kept.append(x)
            del x, b
        gc.collect()
        samples.append(n)
        main.append(rss_bytes())
        work.append(sum(rss_bytes(p) for p in children()))
        in_use.append(malloc_in_use() or 0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            cuda_alloc.append(torch.cuda.memory_allocated())
            cuda_reserved.append(torch.cuda.memory_reserved())
    seconds = time.perf_counter() - start

    def growth(series: list[int]) -> float | None:
        return (series[-1] - series[0]) / series[0] if len(series) > 1 and series[0] else None

    return {
        "path": path,
        "epochs": epochs,
        "samples_per_epoch": samples,
        "workers": workers,
        "device": device,
        "leak_control": leak,
        "main_rss_mb": [round(v / 2**20, 1) for v in main],
        "workers_rss_mb": [round(v / 2**20, 1) for v in work],
        "main_growth_from_epoch1": growth(main),
        "main_malloc_in_use_mb": [round(v / 2**20, 2) for v in in_use],
        "main_malloc_growth_mb": round((in_use[-1] - in_use[0]) / 2**20, 2) if in_use[0] else None,
        "workers_growth_from_epoch1": growth(work) if workers else None,
        "cuda_allocated_mb": [round(v / 2**20, 2) for v in cuda_alloc],
        "cuda_reserved_mb": [round(v / 2**20, 2) for v in cuda_reserved],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--path", choices=("torchvision", "webdataset"), default="torchvision")
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--leak", action="store_true", help="control: keep every rendered batch")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp), args.images)
        result = measure(root, args.path, args.epochs, args.batch, args.workers, args.size, args.device, args.leak)
    result.update(images=args.images, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), cpus=os.cpu_count())
    OUT.mkdir(exist_ok=True)
    name = f"memory-{args.path}{'-leak' if args.leak else ''}.json"
    (OUT / name).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
