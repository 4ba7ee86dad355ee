"""The dataset card ``ndf convert`` writes: ``OUT/README.md`` in the HF dataset-card style.

A YAML header (``pretty_name``, tags, ``dataset_info`` with the features and the splits'
sizes, in the form the Hub and ``datasets`` read), then what a person needs to trust and use
the data: counts per split, the codec settings, the bytes on disk per image, the PSNR
distribution (measured by the conversion on the decoded records), and load snippets for
torchvision-style random access, WebDataset and HF ``datasets``.

The card is a pure function of the manifest and the per-image PSNR, so a resumed conversion
writes the same bytes. Its marker line holds the SHA-256 of the rest of the card: a card
whose text no longer matches it was edited by someone, and ``ndf convert`` then leaves it
alone (:func:`is_generated`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Sequence
from typing import Any

from ._store import Store

__all__ = ["CARD", "dataset_card", "is_generated", "write_card"]

#: the card's file name in OUT
CARD = "README.md"
_MARKER = "<!-- ndf-datasets card {digest}: written by ndf convert; once edited it is yours and is never rewritten -->"
_MARKER_RE = re.compile(r"<!-- ndf-datasets card ([0-9a-f]{64}): [^\n]*-->\n")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_generated(data: bytes | None) -> bool:
    """Whether ``data`` is a card ``ndf convert`` wrote and nobody changed since."""
    if data is None:
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    m = _MARKER_RE.search(text)
    return m is not None and _digest(text[: m.start()] + text[m.end() :]) == m[1]


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _yaml_str(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def _header(manifest: dict[str, Any]) -> list[str]:
    classes = manifest.get("classes", [])
    images = int(manifest.get("stats", {}).get("images", 0))
    lines = ["---", f"pretty_name: {_yaml_str(str(manifest.get('name')) + ' (NDF neural fields)')}",
             "tags:", "- ndf", "- neural-fields", "- image", "size_categories:", f"- {_size_category(images)}"]  # fmt: skip
    if classes:
        lines += ["task_categories:", "- image-classification"]
    # the NDFImage feature; datasets spells a feature type in YAML in snake case and camel-cases
    # it back, so 'n_d_f_image' is what reads back as NDFImage (after `import ndf_datasets`)
    lines += ["dataset_info:", "  features:", "  - name: image", "    dtype: n_d_f_image"]
    if classes:
        lines += ["  - name: label", "    dtype:", "      class_label:", "        names:"]
        lines += [f"          '{i}': {_yaml_str(c)}" for i, c in enumerate(classes)]
    else:
        lines += ["  - name: label", "    dtype: int64"]
    lines += ["  - name: key", "    dtype: string", "  splits:"]
    total = 0
    for split, info in manifest.get("splits", {}).items():
        nbytes = sum(int(e.get("shard_bytes", e.get("bytes", 0))) for e in info.get("shard_stats", []))
        total += nbytes
        lines += [f"  - name: {split}", f"    num_bytes: {nbytes}", f"    num_examples: {info.get('num_examples', 0)}"]
    lines += [f"  download_size: {total}", f"  dataset_size: {total}", "---"]
    return lines


def _histogram(values: Sequence[float], bins: int = 10, width: int = 40) -> list[str]:
    """A text histogram (a Markdown code block): ``lo - hi  count  bar``."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return ["(no values)"]
    lo, hi = min(vals), max(vals)
    step = (hi - lo) / bins if hi > lo else 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / step), bins - 1)] += 1
    top = max(counts)
    out = ["```"]
    for k, c in enumerate(counts):
        a = lo + k * step
        out.append(f"{a:7.2f} - {a + step:7.2f} dB  {c:>7}  {'#' * max(1 if c else 0, round(width * c / top))}")
    out.append("```")
    return out


def _snippets(manifest: dict[str, Any]) -> list[str]:
    layout = manifest.get("layout", "webdataset")
    split = next(iter(manifest.get("splits", {"train": None})), "train")
    out = ["## Loading", "", "`OUT` is this folder (or its URL, e.g. `s3://bucket/prefix`, with `storage_options=`).", ""]
    out += ["**Random access** (map-style, a torch `Dataset`: one range read per image, any size):", "", "```python",
            "from torch.utils.data import DataLoader", "from ndf_datasets.data import NDFShardDataset", "",
            f'ds = NDFShardDataset(OUT, "{split}", size=32)        # ds[i] -> (C x 32 x 32 float tensor, label)',
            "loader = DataLoader(ds, batch_size=256, shuffle=True, num_workers=8)", "```", ""]  # fmt: skip
    if layout == "files":
        out += ["**torchvision** (`ImageFolder` of `.ndf` files):", "", "```python",
                "from ndf_datasets.integrations.torchvision import NDFImageFolder", "",
                f'ds = NDFImageFolder(f"{{OUT}}/{split}", size=32)', "```", ""]  # fmt: skip
    if layout == "webdataset":
        shards = manifest["splits"][split].get("shards", []) if split in manifest.get("splits", {}) else []
        pattern = f"{split}-{{000000..{max(len(shards) - 1, 0):06d}}}{shards[0][len(split) + 7 :] if shards else '.tar.gz'}"
        out += ["**WebDataset** (streaming; every sample once per epoch across ranks and workers, resumable):", "",
                "```python", "from torchdata.stateful_dataloader import StatefulDataLoader",
                "from ndf_datasets.integrations.webdataset import epoch_dataset, ndf_decoder, ndf_samples", "",
                f'ds = epoch_dataset(OUT + "/{pattern}", seed=0, epoch=0, shuffle=1000)',
                'ds = ds.map(ndf_samples(ndf_decoder(size=32))).to_tuple("ndf", "__key__")',
                "loader = StatefulDataLoader(ds, batch_size=None, num_workers=4)   # loader.state_dict() to resume",
                "```", ""]  # fmt: skip
    out += ["**HF datasets**:", "", "```python", "import ndf_datasets  # registers the NDFImage feature and this layout",
            "import datasets", "",
            f'ds = datasets.load_dataset(OUT, split="{split}").with_format("torch")   # ds[0]["image"]: a float tensor',
            "```", ""]  # fmt: skip
    return out


def _target(build: dict[str, Any]) -> str:
    """The conversion's PSNR target in words: every image's floor, or each batch's mean (and its floor)."""
    text = f"{build.get('psnr')} dB"
    if build.get("mean_psnr"):
        text += " (the mean of each batch)"
        if build.get("min_psnr") is not None:
            text += f", no image below {build['min_psnr']} dB"
    return text


def dataset_card(manifest: dict[str, Any], psnr: dict[str, Sequence[float]]) -> str:
    """The card's text for a manifest and each split's per-image PSNR (deterministic)."""
    build = manifest.get("build", {})
    stats = manifest.get("stats", {})
    fp = manifest.get("footprint", {})
    name = manifest.get("name")
    lines = _header(manifest)
    lines += ["", f"# {name}, as neural fields (NDF)", "",
              f"{stats.get('images', 0)} images of `{name}` ({manifest.get('source', {}).get('kind', 'images')}), each "
              "stored as a compact record of one shared base (a neural field decoded at any resolution), written by "
              "[ndf-datasets](https://pypi.org/project/ndf-datasets/) `ndf convert`.", "",
              "| split | images | shards | bytes (data) | bytes / image | mean PSNR (dB) | min PSNR (dB) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for split, info in manifest.get("splits", {}).items():
        n = int(info.get("num_examples", 0))
        data = sum(int(e.get("shard_bytes", e.get("bytes", 0))) for e in info.get("shard_stats", []))
        lines.append(f"| {split} | {n} | {len(info.get('shard_stats', []))} | {data:,} | {data / max(n, 1):.1f} "
                     f"| {info.get('psnr', {}).get('mean', 0):.2f} | {info.get('psnr', {}).get('min', 0):.2f} |")  # fmt: skip
    classes = manifest.get("classes", [])
    if classes:
        shown = ", ".join(f"`{c}`" for c in classes[:20]) + (f" ... ({len(classes)} classes)" if len(classes) > 20 else "")
        lines += ["", f"Classes: {shown}."]
    lines += ["", "## Codec settings", "", "| setting | value |", "| --- | --- |",
              f"| layout | {manifest.get('layout')} (members {'+'.join(manifest.get('members', []))}, "
              f"compression {manifest.get('compression') or 'none'}) |",
              f"| base | `{manifest.get('base')}` ({'given' if build.get('base') else build.get('base_arch', '?') + ' fitted'}) |",
              f"| target PSNR | {_target(build)}, at most {build.get('steps')} steps per record "
              f"(early stop {build.get('early_stop')}) |",
              f"| images below target | {stats.get('below_target', 0)} |",
              f"| shard size | {build.get('shard_size')} images |",
              f"| seed | {build.get('seed')} (byte-reproducible: the same command gives the same files) |",
              f"| versions | {', '.join(f'{k} {v}' for k, v in manifest.get('versions', {}).items())} |"]  # fmt: skip
    per = fp.get("per_image", {})
    lines += ["", "## Bytes per image", "", f"Measured on the files written ({stats.get('bpp', 0)} bits per pixel "
              "of records):", "", "| part | bytes / image | total bytes |", "| --- | ---: | ---: |"]  # fmt: skip
    for part in ("records", "containers", "data", "base", "metadata"):
        lines.append(f"| {part} | {per.get(part, 0)} | {fp.get('bytes', {}).get(part, 0):,} |")
    lines += ["", "`data` = records + containers (tar headers, gzip framing); the base is stored once for all images."]
    lines += ["", "## PSNR distribution", "", "PSNR of each decoded record against its source image, at the source "
              "size (8-bit), as measured by the conversion:", ""]  # fmt: skip
    for split, values in psnr.items():
        lines += [f"**{split}**", ""] + _histogram(values) + [""]
    lines += _snippets(manifest)
    lines += ["A montage of originals and decodes at 1/2, 1x and 2x with these histograms: "
              "`ndf preview OUT -o preview.png --source SRC`.", ""]  # fmt: skip
    body = "\n".join(lines)
    head_end = body.index("\n---\n", 4) + len("\n---\n")  # the marker goes right after the YAML header
    return body[:head_end] + _MARKER.format(digest=_digest(body)) + "\n" + body[head_end:]


def write_card(store: Store, manifest: dict[str, Any]) -> bool:
    """Write ``OUT/README.md`` for ``manifest`` unless a card someone edited (or their own README) is there.

    The per-image PSNR comes from the units' statistics files. Returns whether it was written
    (or was already exactly this card); a kept README is reported with a warning.
    """
    psnr: dict[str, list[float]] = {}
    for split, info in manifest.get("splits", {}).items():
        values: list[float] = []
        for entry in info.get("shard_stats", []):
            raw = store.read(entry["stats"], limit=1 << 28)
            values += [float(v) for v in (json.loads(raw).get("psnr", []) if raw else []) if v is not None]
        psnr[split] = values
    text = dataset_card(manifest, psnr).encode("utf-8")
    old = store.read(CARD, limit=1 << 24)
    if old == text:
        return True
    if old is not None and not is_generated(old):
        warnings.warn(f"{store.path(CARD)} was edited (or is not a card ndf convert wrote): left as it is", stacklevel=2)
        return False
    store.write(CARD, text)
    return True
