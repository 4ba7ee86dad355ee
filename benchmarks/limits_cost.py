"""What the most expensive tiny hostile files cost a reader, at the default LIMITS and under a
lowered profile: the bound behind "no hang, no allocation over the documented limits".

    python -m benchmarks.limits_cost

Every case is a file of a few hundred bytes whose header declares as much work as the
limits allow (tensors whose codes cost no bits, or a near-zero-cost range-coded stream).
Each runs in a fresh subprocess: wall time of ``read_field`` + ``render_fields`` at the
given size, the outcome (``ok`` or the NDFError class) and the peak RSS above the process's
baseline. ``profile`` is ``default`` (``ndf.LIMITS`` as shipped) or ``fuzz`` (the data-loader
profile of ``benchmarks.fuzzlib.FUZZ_LIMITS``). Writes ``benchmarks/out/limits_cost.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

#: (name, what the header declares, output size)
CASES: list[tuple[str, str, object]] = [
    ("entropy-narrow", "grid-mlp field 8000x4096, one latent grid of 32.8 M symbols in [0, 1], an 8-byte stream", 16),
    ("entropy-wide", "grid-mlp field 8000x4096, one latent grid of 32.8 M symbols in [-32768, 32767]", 16),
    ("mlp-6x256-small", "grid-mlp field 4096x4096 with 6 hidden layers of 256 (393 k MACs/pixel), all free", 16),
    ("mlp-6x256-64px", "the same, decoded at 64x64 (8x8 supersampling cap: 262 k samples)", 64),
    ("mlp-6x256-original", "the same, decoded at its original size (needs a 4.3 G-element activation)", None),
    ("default-4096-original", "default-config grid-mlp field 4096x4096 (22 M free symbols), at original size", None),
    ("compact-hyper-max", "compact record of the zoo cifar10 base declaring 2728x2728 (33.5 M symbols, just under "
     "max_symbols), an 8-byte stream", 16),
    ("compact-hyper-1k", "the same declaring 1024x1024 (4.7 M symbols)", 16),
]

_CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from ndf_datasets.codec import format as fmt
from ndf_datasets.codec.coding import TensorCode, pack_codes
from ndf_datasets.codec.decoding import read_field, render_fields
from ndf_datasets.codec.fields import get_arch

from ndf_datasets.codec.errors import NDFError

name, size, profile = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
base = None

def compact(side):
    global base
    import ndf_datasets as ndf
    from ndf_datasets.codec.record import write_record
    base = ndf.load_base("cifar10")
    return write_record(base.hash, 30, b"\0" * 8, size=(side, side))

def field(h, w, config, latent=None, stream=b""):
    arch = get_arch(1)(config, h, w, 3)
    codes = [latent if (s.role == "latent" and latent is not None) else TensorCode(1.0, 0.0, 1.0, 0, 0)
             for s in arch.tensor_specs()]
    return fmt.write(fmt.Container(kind=1, arch=1, colorspace=1, height=h, width=w, config=config,
                                   payload=pack_codes(codes) + stream))

blob = {
    "entropy-narrow": lambda: field(8000, 4096, (1, 1, 0, 8, 0, 0), TensorCode(1.0, 0.0, 0.02, 0, 1), b"\0" * 8),
    "entropy-wide": lambda: field(8000, 4096, (1, 1, 0, 8, 0, 0), TensorCode(1.0, 0.0, 0.02, -32768, 32767), b"\0" * 8),
    "mlp-6x256-small": lambda: field(4096, 4096, (1, 1, 0, 256, 6, 1)),
    "mlp-6x256-64px": lambda: field(4096, 4096, (1, 1, 0, 256, 6, 1)),
    "mlp-6x256-original": lambda: field(4096, 4096, (1, 1, 0, 256, 6, 1)),
    "default-4096-original": lambda: field(4096, 4096, (7, 1, 0, 16, 2, 0)),
    "compact-hyper-max": lambda: compact(2728),
    "compact-hyper-1k": lambda: compact(1024),
}[name]()
if profile == "fuzz":  # after writing: the writer refuses what the lowered limits refuse
    from benchmarks.fuzzlib import FUZZ_LIMITS
    fmt.LIMITS.update(FUZZ_LIMITS)
base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    f = read_field(blob, base)
    render_fields([f], size)
    outcome = "ok"
except NDFError as exc:
    outcome = type(exc).__name__ + ": " + exc.message[:90]
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"bytes": len(blob), "seconds": round(seconds, 3), "outcome": outcome,
                  "peak_rss_above_baseline_mb": round((peak - base_rss) / 1024, 1)}))
"""


def run_case(name: str, size: object, profile: str, timeout_s: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, name, json.dumps(size), profile],
        capture_output=True, text=True, timeout=timeout_s, cwd=Path(__file__).parents[1],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    if proc.returncode != 0:
        return {"outcome": f"process failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    for profile in ("default", "fuzz"):
        for name, what, size in CASES:
            row = {"profile": profile, "case": name, "declares": what, "size": size, **run_case(name, size, profile)}
            rows.append(row)
            print(json.dumps(row))
    OUT.mkdir(exist_ok=True)
    (OUT / "limits_cost.json").write_text(
        json.dumps({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count()}, indent=2)
    )


if __name__ == "__main__":
    main()
