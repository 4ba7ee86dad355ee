"""Read a converted dataset through HF datasets, WebDataset and NDFImageFolder; check they agree.

    ndf convert ../shared/data/mnist benchmarks/out/ndf_mnist ...
    ndf convert ../shared/data/mnist benchmarks/out/ndf_mnist_files --layout files --splits test \\
        --base benchmarks/out/ndf_mnist/<hash>.ndfbase ...
    python -m experiments.loaders_agree benchmarks/out/ndf_mnist

``load_dataset("ndf_mnist")`` finds the shards through ``$NDF_MNIST_URL`` (set here to OUT);
``NDFImageFolder`` reads ``OUT_files/test``. Compares the first ``--count`` test images (by
key) and their labels; exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default="benchmarks/out/ndf_mnist")
    p.add_argument("--count", type=int, default=256)
    args = p.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["NDF_MNIST_URL"] = os.path.abspath(args.out)
    import webdataset as wds
    from datasets import load_dataset
    from ndf_datasets.integrations.torchvision import NDFImageFolder
    from ndf_datasets.integrations.webdataset import ndf_decoder, ndf_samples

    n = args.count
    t0 = time.time()
    ds = load_dataset("ndf_mnist", split="test").with_format("torch")
    print(f"load_dataset('ndf_mnist', split='test'): {ds.num_rows} rows in {time.time() - t0:.1f} s")
    hf = torch.stack([ds[i]["image"] for i in range(n)]).float()
    hf_labels = [int(ds[i]["label"]) for i in range(n)]

    urls = sorted(glob.glob(f"{args.out}/test-*.tar") + glob.glob(f"{args.out}/test-*.tar.gz"))  # plain or compact shards
    pipe = wds.WebDataset(urls, shardshuffle=False).map(ndf_samples(ndf_decoder(size=28))).to_tuple("ndf", "cls")
    wd, wd_labels = [], []
    for x, y in pipe:
        wd.append(x)
        wd_labels.append(int(y))
        if len(wd) == n:
            break
    wd_t = torch.stack(wd)

    folder = NDFImageFolder(f"{args.out}_files/test", size=28)
    index = {os.path.basename(path).split(".")[0]: i for i, (path, _) in enumerate(folder.samples)}
    items = [folder[index[f"{k:06d}"]] for k in range(n)]
    tv = torch.stack([x for x, _ in items])
    tv_labels = [int(folder.classes[c]) for _, c in items]

    checks = {
        "labels HF == WebDataset == NDFImageFolder": hf_labels == wd_labels == tv_labels,
        "pixels HF == WebDataset": torch.equal(hf, wd_t),
        "pixels WebDataset == NDFImageFolder": torch.equal(wd_t, tv),
    }
    for what, ok in checks.items():
        print(f"{what}: {ok}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
