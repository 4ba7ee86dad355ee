"""Callable classes for ``ray.data.Dataset.map_batches``: the base is loaded once per actor, batches are encoded.

* :class:`NDFEncoder`: for a pipeline of your own. A batch with an ``image`` column (uint8
  ``H x W x C`` arrays, or ``H x W`` for grey) and optionally ``label`` gets ``ndf`` (the
  record's bytes), ``psnr`` (measured on the decoded record) and ``nbytes`` columns.
* :class:`NDFShardEncoder`: what ``ndf convert --engine ray`` maps over its units (shards):
  a batch of ``ordinal`` rows gets, per unit, the unit's files packed into one ``files``
  value (:func:`~ndf_datasets.data.engine.pack_files`) for :class:`~.sink.NDFShardSink`, or
  ``kept=True`` when ``OUT`` already holds the unit complete and valid (resume).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ...codec import SharedBase, encode_batch, load_base
from ...data.engine import Job, JobSpec, pack_files
from ...data.units import measure_psnr

__all__ = ["NDFEncoder", "NDFShardEncoder"]


class NDFEncoder:
    """Encode a batch of images as records of one base (``map_batches(NDFEncoder, fn_constructor_kwargs=...)``).

    Example::

        ds = ray.data.read_images("s3://bucket/imgs", size=(32, 32))
        ds = ds.map_batches(NDFEncoder, fn_constructor_kwargs={"base": "cifar10", "psnr": 30},
                            batch_size=256, compute=ray.data.ActorPoolStrategy(size=4))

    Args:
        base: a :class:`~ndf_datasets.SharedBase`, a ``.ndfbase`` path/URL or a zoo name
            (loaded once, in the actor).
        psnr, steps, seed, early_stop: record fitting, as :func:`~ndf_datasets.encode_batch`.
        mean_psnr: learned bases: ``psnr`` is the mean PSNR of each batch, met at the fewest
            bytes (``encode_batch(mean_psnr=)``), instead of every image's floor.
        device: where to encode (``"cuda"`` for ``num_gpus=1`` actors).

    Each call encodes the batch it is given in one :func:`~ndf_datasets.encode_batch` call, so
    the records depend on how Ray cuts batches only through the seed; for byte-reproducible
    datasets use ``ndf convert --engine ray``, which keeps the single-process batches.
    """

    def __init__(
        self,
        base: SharedBase | str | os.PathLike,
        *,
        psnr: float | None = 30.0,
        steps: int | None = 20,
        seed: int = 0,
        early_stop: bool = True,
        device: str = "cpu",
        mean_psnr: bool = False,
    ) -> None:
        self.base = base if isinstance(base, SharedBase) else load_base(base)
        self.psnr, self.steps, self.seed, self.early_stop, self.device = psnr, steps, seed, early_stop, device
        self.mean_psnr = bool(mean_psnr)
        if self.mean_psnr and (psnr is None or not getattr(self.base.arch, "learned", False)):
            raise ValueError("mean_psnr needs a psnr target and a learned base")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "image" not in batch:
            raise ValueError(f"NDFEncoder needs an 'image' column; the batch has {sorted(batch)}")
        images = [np.asarray(im, dtype=np.uint8) for im in batch["image"]]
        images = [im[..., None] if im.ndim == 2 else im for im in images]
        labels = [int(v) for v in batch["label"]] if "label" in batch else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".* can not reach .* dB with this base")
            target = {"psnr": None, "mean_psnr": self.psnr} if self.mean_psnr else {"psnr": self.psnr}
            blobs = encode_batch(images, **target, base=self.base, labels=labels, steps=self.steps,
                                 seed=self.seed, device=self.device, batch_size=len(images),
                                 early_stop=self.early_stop)  # fmt: skip
        out = dict(batch)
        out["ndf"] = np.array(blobs, dtype=object)
        out["psnr"] = np.array(measure_psnr(images, blobs, self.base), dtype=np.float64)
        out["nbytes"] = np.array([len(b) for b in blobs], dtype=np.int64)
        return out


class NDFShardEncoder:
    """Encode the units (shards) of a prepared conversion (``ndf convert --engine ray``).

    Args:
        spec: the job (:meth:`~ndf_datasets.data.engine.Job.spec`); the actor opens the
            source and loads the base from ``OUT`` once.

    A batch is ``{"ordinal": [unit, ...]}``; the result has ``ordinal``, ``kept`` (already
    complete in ``OUT``), ``images`` (encoded here) and ``files`` (the packed files, empty
    when kept). Subclass it to add behaviour (logging, fault injection in tests).
    """

    def __init__(self, spec: JobSpec) -> None:
        self.job = Job.open(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        ordinals, kept, images, files = [], [], [], []
        for ordinal in batch["ordinal"]:
            unit = self.job.unit(int(ordinal))
            made = self.job.unit_files(unit)
            ordinals.append(int(ordinal))
            kept.append(made is None)
            images.append(0 if made is None else unit.stop - unit.start)
            files.append(b"" if made is None else pack_files(made))
        return {"ordinal": np.array(ordinals, dtype=np.int64), "kept": np.array(kept, dtype=bool),
                "images": np.array(images, dtype=np.int64), "files": np.array(files, dtype=object)}  # fmt: skip
