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
    import torch

    from benchmarks.fuzzlib import FuzzFinding, Mutator, fuzz_limits, load_corpus, target

    seeds = load_corpus()
    resolve = seeds.resolver()
    mutator = Mutator(list(seeds.files.values()), random.Random(seed), list(seeds.bases))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in DataLoader workers
    outcomes: dict[str, int] = {}
    findings: list[dict[str, str]] = []
    unreproduced: list[dict[str, Any]] = []
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
            if dt > timeout_s:  # re-time it: a stall of the machine is not the input's doing
                again = min(_timed(target, data, resolve) for _ in range(3))
                if again < timeout_s / 2:
                    unreproduced.append({"first_s": round(dt, 3), "replay_s": round(again, 4), "input_hex": data.hex()})
                else:
                    findings.append({"kind": "timeout", "detail": f"{dt:.2f} s, {again:.2f} s again", "input_hex": data.hex()})
            if _peak_rss_mb() > rss_mb:
                findings.append({"kind": "oom", "detail": f"peak RSS {_peak_rss_mb():.0f} MB", "input_hex": data.hex()})
                break
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    torch.set_num_threads(threads)
    return {
        "inputs": runs,
        "seconds": time.perf_counter() - start,
        "outcomes": outcomes,
        "findings": findings,
        "unreproduced_timeouts": unreproduced,
        "max_input_s": slowest,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - only the time matters here; the first run reported it
        pass
    return time.perf_counter() - t0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _random_worker(args: tuple[int, int, float, int]) -> dict[str, Any]:
    return run_random(*args)


# ----------------------------------------------------------------------------- atheris engine


def atheris_child(argv: list[str]) -> None:
    """Entry point of one libFuzzer process (``--atheris-child``)."""
    import atheris
    import torch

    torch.set_num_threads(1)  # one worker per core, as DataLoader workers run; no OpenMP oversubscription

    with atheris.instrument_imports(include=["ndf_datasets"]):
        import ndf_datasets  # noqa: F401
        import ndf_datasets.codec.coding  # noqa: F401
        import ndf_datasets.codec.decoding  # noqa: F401
        import ndf_datasets.codec.exact  # noqa: F401
        import ndf_datasets.codec.fields.conv  # noqa: F401
        import ndf_datasets.codec.fields.grid  # noqa: F401
        import ndf_datasets.codec.fields.hyper  # noqa: F401
        import ndf_datasets.codec.fields.pixel  # noqa: F401
        import ndf_datasets.codec.format  # noqa: F401
        import ndf_datasets.codec.gaussian  # noqa: F401
        import ndf_datasets.codec.record  # noqa: F401
        import ndf_datasets.codec.shared  # noqa: F401
    from benchmarks.fuzzlib import FUZZ_LIMITS, Mutator, load_corpus, target
    from ndf_datasets.codec import format as fmt

    seeds = load_corpus()
    resolve = seeds.resolver()
    pool = list(seeds.files.values())
    hashes = list(seeds.bases)
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
                m = Mutator(pool, rng, hashes)
                out = m._seal(out[:-4], m._base_of(bytes(data)))  # a compact record re-sealed for its own base
            return out
        return Mutator(pool, rng, hashes).mutate(bytes(data) if data else None)[:max_size]

    atheris.Setup([sys.argv[0], *argv], test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_STAT = re.compile(r"stat::(\w+):\s*(\d+)")
_COV = re.compile(r"cov: (\d+)")


def replay_seconds(path: Path, repeats: int = 3) -> float | None:
    """The fastest of ``repeats`` runs of one input through the target, in a fresh process
    (``None`` if it raised there: then it is a crash, not a timeout)."""
    code = (
        "import sys,time,torch; torch.set_num_threads(1)\n"
        "from benchmarks.fuzzlib import fuzz_limits, load_corpus, target\n"
        "s=load_corpus(); r=s.resolver(); d=open(sys.argv[1],'rb').read(); best=1e9\n"
        "with fuzz_limits():\n"
        " [target(b, r) for b in s.files.values()]\n"
        f" for _ in range({repeats}):\n"
        "  t=time.perf_counter(); target(d, r); best=min(best, time.perf_counter()-t)\n"
        "print(best)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    return float(proc.stdout.split()[-1]) if proc.returncode == 0 and proc.stdout.strip() else None


def _fuzz_worker(k: int, runs: int, out: Path, timeout_s: int, rss_mb: int, max_len: int, result: dict) -> None:
    """One libFuzzer worker: run until ``runs`` inputs are done or a reproducible finding.

    A timeout artifact is replayed in a fresh process; when it then runs in under half the
    timeout, the stall was the machine's (other load), not the input's: it is recorded as
    ``unreproduced_timeouts`` and the worker resumes on the same corpus with the runs left.
    """
    from benchmarks.fuzzlib import CORPUS

    wdir = out / f"w{k}"
    corpus = wdir / "corpus"
    shutil.rmtree(wdir, ignore_errors=True)
    corpus.mkdir(parents=True)
    for p in (CORPUS / "seeds").iterdir():
        shutil.copy(p, corpus / p.name)
    for p in (CORPUS / "regressions").glob("*"):
        shutil.copy(p, corpus / ("reg-" + p.name))
    result.update(inputs=0, findings=[], unreproduced_timeouts=[], peak_rss_mb=0, slowest_input_s=0, coverage=0)
    attempt = 0
    while result["inputs"] < runs:
        attempt += 1
        log_path = wdir / f"log{attempt}.txt"
        args = [
            sys.executable, "-m", "benchmarks.fuzz", "--atheris-child", "--",
            str(corpus), f"-runs={runs - result['inputs']}", f"-timeout={timeout_s}", f"-rss_limit_mb={rss_mb}",
            f"-max_len={max_len}", f"-seed={1000 * attempt + k}", f"-artifact_prefix={wdir}/", "-print_final_stats=1",
            "-print_pcs=0", "-reload=0",
        ]  # fmt: skip
        with open(log_path, "w") as log:
            subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
        text = log_path.read_text(errors="replace")
        stats = {key: int(v) for key, v in _STAT.findall(text)}
        done = _DONE.findall(text)
        result["inputs"] += stats.get("number_of_executed_units", int(done[-1][0]) if done else 0)
        result["peak_rss_mb"] = max(result["peak_rss_mb"], stats.get("peak_rss_mb", 0))
        result["slowest_input_s"] = max(result["slowest_input_s"], stats.get("slowest_unit_time_sec", 0))
        cov = _COV.findall(text)
        result["coverage"] = max(result["coverage"], int(cov[-1]) if cov else 0)
        artifacts = [p for p in wdir.iterdir() if p.name.split("-")[0] in ("crash", "timeout", "oom", "leak")]
        new = [p for p in artifacts if p.name not in result["findings"] and p.name not in
               [u["file"] for u in result["unreproduced_timeouts"]]]  # fmt: skip
        if not new:
            if "Done" not in text and "DONE" not in text:
                result["findings"].append(f"libFuzzer stopped without an artifact: see {log_path}")
            break
        stop = False
        for p in new:
            replay = replay_seconds(p) if p.name.startswith("timeout") else None
            if replay is not None and replay < timeout_s / 2:
                result["unreproduced_timeouts"].append({"file": p.name, "replay_s": round(replay, 4)})
            else:
                result["findings"].append(p.name)
                stop = True
        if stop:
            break
    result["attempts"] = attempt


def run_atheris(runs: int, workers: int, out: Path, timeout_s: int, rss_mb: int, max_len: int) -> dict[str, Any]:
    """Run ``workers`` libFuzzer workers of ``runs / workers`` inputs each; collect their stats."""
    import threading

    results: list[dict[str, Any]] = [{} for _ in range(workers)]
    threads = [
        threading.Thread(target=_fuzz_worker, args=(k, runs // workers, out, timeout_s, rss_mb, max_len, results[k]))
        for k in range(workers)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "inputs": sum(r["inputs"] for r in results),
        "seconds": time.perf_counter() - start,
        "workers": results,
        "findings": [f for r in results for f in r["findings"]],
        "unreproduced_timeouts": [u for r in results for u in r["unreproduced_timeouts"]],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "max_input_s": max(r["slowest_input_s"] for r in results),
        "coverage": max(r["coverage"] for r in results),
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
            "unreproduced_timeouts": [u for r in parts for u in r["unreproduced_timeouts"]],
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
