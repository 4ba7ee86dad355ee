"""Check that every single-byte change of a real .ndf file is detected.

    python -m benchmarks.flips FILE.ndf [--base BASE]

Each byte is XORed with 0x01, 0x80 and 0xFF in turn and decoded; every attempt must raise an
``NDFError``. Prints the count of detected / tried mutations and the error classes seen.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import ndf_datasets as ndf


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("file", type=Path)
    p.add_argument("--base", type=Path, default=None)
    args = p.parse_args()
    blob = args.file.read_bytes()
    base = ndf.load_base(args.base) if args.base else None
    ndf.decode(blob, base=base)  # the original must decode
    tried = detected = 0
    kinds: collections.Counter[str] = collections.Counter()
    for pos in range(len(blob)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(blob)
            bad[pos] ^= flip
            tried += 1
            try:
                ndf.decode(bytes(bad), base=base)
            except ndf.NDFError as exc:
                detected += 1
                kinds[type(exc).__name__] += 1
    print(f"{args.file}: {len(blob)} bytes, {detected}/{tried} single-byte changes detected; {dict(kinds)}")
    if detected != tried:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
