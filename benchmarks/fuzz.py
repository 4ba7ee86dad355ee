"""Fuzz the ``.ndf`` parser and decoder: only NDFError subclasses, no input over 1 s, bounded memory.

    python -m benchmarks.fuzz --runs 1000000 --workers 2            # coverage-guided (atheris / libFuzzer)
    python -m benchmarks.fuzz --runs 20000 --engine random           # plain mutation loop, no atheris
    python -m benchmarks.fuzz --make-seeds                           # regenerate tests/fuzz_corpus/seeds

Every input goes through :func:`benchmarks.fuzzlib.target` (parse, inspect, load_base,
read_field, render at small sizes) under :data:`benchmarks.fuzzlib.FUZZ_LIMITS`. Inputs are
mutations of the committed seed corpus (:class:`benchmarks.fuzzlib.Mutator`: byte-level and
structure-aware, usually with a re-sealed CRC). A finding is any exception that is not an
``NDFError``, a decode returning pixels outside [0, 1], an input taking over 1 s
(``--timeout``) or the process exceeding ``--rss-mb`` of resident memory.

``atheris`` engine: each of ``--workers`` processes runs libFuzzer (``-timeout=1
-rss_limit_mb=...``) with a custom mutator that applies libFuzzer's own mutations or ours,
then re-seals the CRC; coverage feedback comes from instrumenting ``ndf_datasets``. Findings
are written to ``<out>/w<k>/`` as ``crash-*``, ``timeout-*``, ``oom-*`` files; add them to
``tests/fuzz_corpus/regressions/`` once fixed. ``random`` engine: the same mutator and
target in a loop, no coverage feedback, timing every input.

Writes ``<out>/summary.json`` (inputs, wall time, inputs/s, findings) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out" / "fuzz"


# ----------------------------------------------------------------------------- random engine


def run_random(runs: int, seed: int, timeout_s: float = 1.0, rss_mb: int = 2048) -> dict[str, Any]:
    """Run ``runs`` mutated inputs through the target in this process.

    Returns:
        ``{"inputs", "seconds", "outcomes", "findings", "max_input_s", "peak_rss_mb"}``;
        each finding is ``{"kind", "detail", "input_hex"}``.
    """
    from benchmarks.fuzzlib import FuzzFinding, Mutator, fuzz_limits, load_corpus, target

    seeds = load_corpus()
    resolve = seeds.resolver()
    mutator = Mutator(list(seeds.files.values()), random.Random(seed))
    outcomes: dict[str, int] = {}
    findings: list[dict[str, str]] = []
    slowest = 0.0
    start = time.perf_counter()
    with fuzz_limits():
        for blob in seeds.files.values():  # warm-up: first calls load libraries
            target(blob, resolve)
        for _ in range(runs):
            data = mutator.mutate()
            t0 = time.perf_counter()
            try:
                outcome = target(data, resolve)
            except (FuzzFinding, Exception) as exc:  # noqa: BLE001 - every non-NDFError is a finding
                outcome = "FINDING"
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                findings.append({"kind": "crash", "detail": detail, "input_hex": data.hex()})
            dt = time.perf_counter() - t0
            slowest = max(slowest, dt)
            if dt > timeout_s:
                findings.append({"kind": "timeout", "detail": f"{dt:.2f} s", "input_hex": data.hex()})
            if _peak_rss_mb() > rss_mb:
                findings.append({"kind": "oom", "detail": f"peak RSS {_peak_rss_mb():.0f} MB", "input_hex": data.hex()})
                break
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "inputs": runs,
        "seconds": time.perf_counter() - start,
        "outcomes": outcomes,
        "findings": findings,
        "max_input_s": slowest,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _random_worker(args: tuple[int, int, float, int]) -> dict[str, Any]:
    return run_random(*args)


# ----------------------------------------------------------------------------- atheris engine


def atheris_child(argv: list[str]) -> None:
    """Entry point of one libFuzzer process (``--atheris-child``)."""
    import atheris

    with atheris.instrument_imports(include=["ndf_datasets"]):
        import ndf_datasets  # noqa: F401
        import ndf_datasets.coding  # noqa: F401
        import ndf_datasets.decode  # noqa: F401
        import ndf_datasets.fields.conv  # noqa: F401
        import ndf_datasets.fields.grid  # noqa: F401
        import ndf_datasets.format  # noqa: F401
        import ndf_datasets.shared  # noqa: F401
    from benchmarks.fuzzlib import FUZZ_LIMITS, Mutator, load_corpus, reseal, target
    from ndf_datasets import format as fmt

    seeds = load_corpus()
    resolve = seeds.resolver()
    pool = list(seeds.files.values())
    fmt.LIMITS.update(FUZZ_LIMITS)
    for blob in pool:  # warm-up, so the first timed input does not pay for library loading
        target(blob, resolve)

    def test_one_input(data: bytes) -> None:
        target(bytes(data), resolve)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            out = atheris.Mutate(data, max_size)
            if rng.random() < 0.75 and len(out) > 4:
                out = reseal(out[:-4])
            return out
        return Mutator(pool, rng).mutate(bytes(data) if data else None)[:max_size]

    atheris.Setup([sys.argv[0], *argv], test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"stat::(\w+):\s*(\d+)")
_COV = re.compile(r"cov: (\d+)")


def run_atheris(runs: int, workers: int, out: Path, timeout_s: int, rss_mb: int, max_len: int) -> dict[str, Any]:
    """Run ``workers`` libFuzzer processes of ``runs / workers`` inputs each; collect their stats."""
    from benchmarks.fuzzlib import CORPUS

    procs = []
    start = time.perf_counter()
    for k in range(workers):
        wdir = out / f"w{k}"
        corpus = wdir / "corpus"
        shutil.rmtree(wdir, ignore_errors=True)
        corpus.mkdir(parents=True)
        for p in (CORPUS / "seeds").iterdir():
            shutil.copy(p, corpus / p.name)
        for p in (CORPUS / "regressions").glob("*"):
            shutil.copy(p, corpus / ("reg-" + p.name))
        args = [
            sys.executable, "-m", "benchmarks.fuzz", "--atheris-child", "--",
            str(corpus), f"-runs={runs // workers}", f"-timeout={timeout_s}", f"-rss_limit_mb={rss_mb}",
            f"-max_len={max_len}", f"-seed={1000 + k}", f"-artifact_prefix={wdir}/", "-print_final_stats=1",
            "-print_pcs=0", "-reload=0",
        ]  # fmt: skip
        log = open(wdir / "log.txt", "w")
        procs.append((subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1]), log, wdir))
    results = []
    for proc, log, wdir in procs:
        rc = proc.wait()
        log.close()
        text = (wdir / "log.txt").read_text(errors="replace")
        done = _DONE.findall(text)
        stats = {k: int(v) for k, v in _STAT.findall(text)}
        artifacts = sorted(p.name for p in wdir.iterdir() if p.name.split("-")[0] in ("crash", "timeout", "oom", "leak"))
        results.append({
            "rc": rc,
            "inputs": stats.get("number_of_executed_units", int(done[-1][0]) if done else 0),
            "peak_rss_mb": stats.get("peak_rss_mb"),
            "slowest_input_s": stats.get("slowest_unit_time_sec"),
            "coverage": int(_COV.findall(text)[-1]) if _COV.findall(text) else None,
            "artifacts": artifacts,
            "log": str(wdir / "log.txt"),
        })  # fmt: skip
    seconds = time.perf_counter() - start
    total = sum(r["inputs"] for r in results)
    return {
        "inputs": total,
        "seconds": seconds,
        "workers": results,
        "findings": [a for r in results for a in r["artifacts"]],
        "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in results),
        "max_input_s": max((r["slowest_input_s"] or 0) for r in results),
        "coverage": max((r["coverage"] or 0) for r in results),
    }


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--atheris-child":
        atheris_child(argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1_000_000, help="inputs in all (split over the workers)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--engine", choices=("atheris", "random"), default=None, help="default: atheris if installed")
    p.add_argument("--timeout", type=int, default=1, help="seconds per input before it is a finding")
    p.add_argument("--rss-mb", type=int, default=2048, help="resident memory per process before it is a finding")
    p.add_argument("--max-len", type=int, default=4096, help="longest input (atheris)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--make-seeds", action="store_true", help="regenerate the seed corpus and exit")
    args = p.parse_args(argv)
    if args.make_seeds:
        from benchmarks.fuzzlib import make_seeds, write_seeds

        write_seeds(make_seeds(args.seed))
        return 0
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    args.out.mkdir(parents=True, exist_ok=True)
    if engine == "atheris":
        summary = run_atheris(args.runs, args.workers, args.out, args.timeout, args.rss_mb, args.max_len)
    else:
        import multiprocessing

        per = args.runs // args.workers
        jobs = [(per, args.seed + k, float(args.timeout), args.rss_mb) for k in range(args.workers)]
        start = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(args.workers) as pool:
            parts = pool.map(_random_worker, jobs)
        summary = {
            "inputs": sum(r["inputs"] for r in parts),
            "seconds": time.perf_counter() - start,
            "findings": [f for r in parts for f in r["findings"]],
            "max_input_s": max(r["max_input_s"] for r in parts),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in parts),
            "outcomes": {k: sum(r["outcomes"].get(k, 0) for r in parts) for k in {k for r in parts for k in r["outcomes"]}},
        }
    summary.update(
        engine=engine,
        workers_requested=args.workers,
        inputs_per_s=summary["inputs"] / max(summary["seconds"], 1e-9),
        timeout_s=args.timeout,
        rss_limit_mb=args.rss_mb,
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        cpus=os.cpu_count(),
    )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "workers"}, indent=2)[:4000])
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
