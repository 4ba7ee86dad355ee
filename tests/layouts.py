"""Writing the same samples in every shard layout, for tests that must hold on each of them.

* ``"tar"``: WebDataset's own writer through :func:`~ndf_datasets.integrations.webdataset.write_shards`,
  ``.ndf`` + ``.cls`` members (the layout before issue 12, and what other tools write);
* ``"compact"``: what ``ndf convert`` writes by default, one ``.ndf`` member per sample,
  gzip-compressed (``.tar.gz``);
* ``"parquet"``: ``ndf convert --format parquet`` (HF ``datasets`` only; WebDataset does not
  read Parquet).
"""

from __future__ import annotations

from pathlib import Path

from ndf_datasets.data import parquet, shards

LAYOUTS = ("tar", "compact", "parquet")
#: the layouts WebDataset pipelines read
TAR_LAYOUTS = ("tar", "compact")


def write_layout(out: Path, blobs: list[bytes], labels: list[int], per_shard: int, layout: str) -> list[str]:
    """``out/train-NNNNNN.<ext>`` shards of ``blobs`` (keys ``%08d``); returns their paths in order."""
    if layout == "tar":
        from ndf_datasets.integrations.webdataset import write_shards

        samples = ({"ndf": b, "cls": c} for b, c in zip(blobs, labels))
        return write_shards(str(out / "train-%06d.tar"), samples, maxcount=per_shard).urls
    samples = [shards.Sample(f"{i:08d}", b, c) for i, (b, c) in enumerate(zip(blobs, labels))]
    urls = []
    for n, start in enumerate(range(0, len(samples), per_shard)):
        part = samples[start : start + per_shard]
        if layout == "compact":
            path = out / f"train-{n:06d}.tar.gz"
            path.write_bytes(shards.shard_bytes(part, shards.COMPACT, compress=True))
        elif layout == "parquet":
            path = out / f"train-{n:06d}.parquet"
            path.write_bytes(parquet.parquet_bytes(part, [str(c) for c in range(10)]))
        else:
            raise ValueError(layout)
        urls.append(str(path))
    return urls
