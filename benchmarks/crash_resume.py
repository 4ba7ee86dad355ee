"""Crash safety of ``ndf convert``: SIGKILL at random moments, resume, byte-identical output.

    python -m benchmarks.crash_resume --kills 24            # the campaign (figures in RELIABILITY.md)
    python -m benchmarks.crash_resume --kills 4 --train 4   # the CI size (tests/test_crash_resume.py)

1. A small ImageFolder source (``--train`` / ``--test`` PNGs per class, 8x8) is converted
   once without interruption (the reference), in a subprocess, timing it.
2. Rounds: ``ndf convert SRC OUT`` is started (resuming whatever OUT holds) and killed with
   SIGKILL, alternately (a) after a delay drawn uniformly from [0, reference time] and (b) a
   delay drawn from [0, 0.3 s] after the 1st to 3rd new shard appeared (so kills also land
   while shards are being encoded and written, not only during start-up). A conversion that
   finishes before its kill ends the round: OUT must then equal the reference byte for
   byte, and it is deleted for the next round. Rounds continue until ``--kills`` processes
   were killed while running; then the conversion is run to completion once more and
   compared with the reference.
3. All the while a concurrent reader polls OUT every few milliseconds: a file under a final
   name (``<split>-NNNNNN.tar[.gz]``, ``*.ndfbase``, ``ndf_convert.json``, ``ndf_dataset.json``,
   ``stats/*.json``) must always be complete: shards parse as canonical tars
   (:func:`ndf_datasets.data.shards.parse_shard`) whose ``.ndf`` members all decode, the base
   loads, JSON parses, a shard index (``stats/*.ndfidx``) passes its size and CRC checks and
   the dataset card (``README.md``) carries the digest of its own text. Temporary files are not looked at: they are not final names.

Each kill is recorded with where it landed (job file written? base? how many shards?).
Writes ``benchmarks/out/crash_resume.json``; exits 1 on any difference or partial file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
SHARDS = (".tar", ".tar.gz")  # what ndf convert writes by default (tar shards; .parquet with --format parquet)
FINAL = re.compile(r"([A-Za-z0-9_]+-\d{6}\.(?:tar|tar\.gz|parquet)|[0-9a-f]{16}\.ndfbase|ndf_convert\.json|ndf_dataset\.json|README\.md)")
ARGS = ["--shard-size", "2", "--batch-size", "4", "--steps", "20", "--no-early-stop", "--base", "fit", "--base-epochs", "1",
        "--psnr", "20", "-q"]  # fmt: skip


def write_source(root: Path, train: int, test: int, side: int = 8) -> Path:
    """``root/{train,test}/{a,b}/NN.png``: smooth random RGB images."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                low = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
                img = Image.fromarray(low).resize((side, side), Image.BILINEAR)
                img.save(folder / f"{i:02d}.png")
    return root


def _cmd(src: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "ndf_datasets.cli", "convert", str(src), str(out), *ARGS]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


class Reader(threading.Thread):
    """Polls ``folder``; every file under a final name must be complete and valid."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder = folder
        self.stop = threading.Event()
        self.checked = 0  # distinct file versions fully verified
        self.reads = 0  # reads of files under final names
        self.errors: list[str] = []
        self._seen: dict[str, str] = {}

    def _check(self, path: Path) -> None:
        import ndf_datasets as ndf
        from ndf_datasets.data.card import CARD, is_generated
        from ndf_datasets.data.shardindex import INDEX_SUFFIX, ShardIndex
        from ndf_datasets.data.shards import parse_shard

        data = path.read_bytes()
        self.reads += 1
        key = hashlib.sha256(data).hexdigest()
        if self._seen.get(str(path)) == key:
            return  # unchanged since it was last verified
        name = path.name
        if name.endswith(SHARDS):
            for _, parts in parse_shard(data, name):
                ndf.read_field(parts["ndf"], lambda h: self._base(h), name)
        elif name.endswith(".ndfbase"):
            ndf.load_base(data, name)
        elif name.endswith(INDEX_SUFFIX):
            ShardIndex.parse(data, name)
        elif name == CARD:
            if not is_generated(data):
                raise ValueError("the card's text does not match its digest (partial or foreign)")
        else:
            json.loads(data)
        self._seen[str(path)] = key
        self.checked += 1

    def _base(self, base_hash: bytes) -> Any:
        import ndf_datasets as ndf

        return ndf.load_base((self.folder / ndf.base_filename(base_hash)).read_bytes())

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                names = [p for p in self.folder.rglob("*") if p.is_file()] if self.folder.exists() else []
            except OSError:
                names = []  # the folder was being deleted between rounds
            for path in names:
                if not (FINAL.fullmatch(path.name) or (path.parent.name == "stats" and path.suffix in (".json", ".ndfidx"))):
                    continue
                try:
                    self._check(path)
                except FileNotFoundError:
                    continue  # deleted between rounds
                except Exception as exc:  # noqa: BLE001 - every failure is a partial or bad file: recorded
                    self.errors.append(f"{path.relative_to(self.folder)}: {type(exc).__name__}: {exc}")
            time.sleep(0.003)


def _state(out: Path) -> dict[str, Any]:
    names = os.listdir(out) if out.exists() else []
    return {
        "job": "ndf_convert.json" in names,
        "base": any(n.endswith(".ndfbase") for n in names),
        "shards": sum(1 for n in names if n.endswith(SHARDS) and FINAL.fullmatch(n)),
        "temporaries": sum(1 for n in names if not FINAL.fullmatch(n) and n != "stats"),
        "manifest": "ndf_dataset.json" in names,
    }


def campaign(workdir: Path, kills: int, train: int, test: int, seed: int) -> dict[str, Any]:
    src = write_source(workdir / "src", train, test)
    ref = workdir / "reference"
    start = time.perf_counter()
    subprocess.run(_cmd(src, ref), env=_env(), check=True, capture_output=True, timeout=900)
    ref_s = time.perf_counter() - start
    reference = digest(ref)
    out = workdir / "out"
    rng = random.Random(seed)
    reader = Reader(out)
    reader.start()
    log: list[dict[str, Any]] = []
    completed_rounds = mismatches = 0
    try:
        while sum(1 for e in log if e["killed"]) < kills:
            by_progress = len(log) % 2 == 1
            shards_at_start = _state(out)["shards"]
            wanted = shards_at_start + rng.randint(1, 3)
            delay = rng.uniform(0.0, 0.3) if by_progress else rng.uniform(0.0, ref_s)
            t0 = time.perf_counter()
            proc = subprocess.Popen(_cmd(src, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if by_progress:  # wait for progress (bounded by the reference time and the process's end)
                while proc.poll() is None and _state(out)["shards"] < wanted and time.perf_counter() - t0 < 3 * ref_s:
                    time.sleep(0.005)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                before = _state(out)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                log.append({"killed": True, "kind": "progress" if by_progress else "time",
                            "after_s": round(time.perf_counter() - t0, 2),
                            "shards_written_by_this_run": before["shards"] - shards_at_start, **before})  # fmt: skip
                continue
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if proc.returncode != 0:
                raise RuntimeError(f"a resumed conversion failed (rc {proc.returncode}): {err[-2000:]}")
            same = digest(out) == reference
            completed_rounds += 1
            mismatches += not same
            log.append({"killed": False, "after_s": round(delay, 2), "identical": same})
            shutil.rmtree(out)
        done = subprocess.run(_cmd(src, out), env=_env(), capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"the final resume failed: {done.stderr[-2000:]}")
        final_same = digest(out) == reference
    finally:
        time.sleep(0.05)
        reader.stop.set()
        reader.join(10)
    killed = [e for e in log if e["killed"]]
    return {
        "kills": len(killed),
        "kill_points": killed,
        "kills_with_shards_done": sum(1 for e in killed if e["shards"] > 0),
        "kills_after_this_run_wrote_a_shard": sum(1 for e in killed if e["shards_written_by_this_run"] > 0),
        "kills_by_kind": {k: sum(1 for e in killed if e["kind"] == k) for k in ("time", "progress")},
        "kills_before_job_file": sum(1 for e in killed if not e["job"]),
        "kills_with_temporaries_left": sum(1 for e in killed if e["temporaries"]),
        "rounds_completed_before_kill": completed_rounds,
        "round_mismatches": mismatches,
        "final_identical": final_same,
        "reference_seconds": round(ref_s, 1),
        "reference_files": len(reference),
        "reference_shards": sum(1 for n in reference if n.endswith(SHARDS)),
        "reader_checks": reader.checked,
        "reader_reads": reader.reads,
        "reader_errors": reader.errors,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--train", type=int, default=24, help="training images per class")
    p.add_argument("--test", type=int, default=8, help="test images per class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = campaign(Path(tmp), args.kills, args.train, args.test, args.seed)
    result.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), cpus=os.cpu_count(), command=" ".join(sys.argv))
    OUT.mkdir(exist_ok=True)
    (OUT / "crash_resume.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "kill_points"}, indent=2))
    ok = result["final_identical"] and not result["round_mismatches"] and not result["reader_errors"]
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
