"""``ndf convert --engine ray``: byte-for-byte the single-process files, a crashed actor retried without
duplicates, resume after the whole job is killed; :class:`NDFEncoder` in a user pipeline.

Ray runs in subprocesses (``tests/ray_job.py``) on a local instance with 2 CPUs, inside a
network namespace of their own that has only the loopback interface (``unshare -n``; Ray's
servers listen on every interface they see, so this is what keeps them on 127.0.0.1). Every
process of a run is ended by its id when the run is over.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ndf_datasets as ndf

from .test_sources import write_image_folder

pytest.importorskip("ray")
from .ray_job import KW  # noqa: E402

JOB = Path(__file__).with_name("ray_job.py")
UNSHARE = shutil.which("unshare")


def _namespace_ok() -> bool:
    if UNSHARE is None:
        return False
    done = subprocess.run([UNSHARE, "-n", "true"], capture_output=True, timeout=30)
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _namespace_ok(), reason="needs unshare -n (a loopback-only network namespace)")


def _cmd(*args: str) -> list[str]:
    script = f'ip link set lo up && exec "{sys.executable}" "{JOB}" ' + " ".join(f'"{a}"' for a in args)
    return [UNSHARE, "-n", "sh", "-c", script]


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _namespace_pids(pid: int) -> list[int]:
    """Every process in the network namespace of ``pid`` (the run's own processes, nothing else).

    Empty while ``pid`` is still in this process's namespace: right after ``Popen``, before
    ``unshare`` has switched, the "namespace of pid" is the host's, and killing its processes
    would kill everything on the machine (it killed the shell running the tests).
    """
    try:
        ns = os.readlink(f"/proc/{pid}/ns/net")
        if ns == os.readlink("/proc/self/ns/net"):
            return []
    except OSError:
        return []
    mine = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == ns:
                    mine.append(int(entry))
            except OSError:
                pass
    return mine


def _end(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("ray") / "src", {"train": 8, "test": 4})


@pytest.fixture(scope="module")
def reference(src) -> Path:
    out = src.parent / "reference"
    ndf.convert(src, out, **KW)
    return out


def _run(src: Path, prefix: Path, *modes: str, timeout: float = 400) -> list[dict]:
    proc = subprocess.Popen(_cmd(str(src), str(prefix), *modes), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    pids: list[int] = []
    try:
        time.sleep(2)
        pids = _namespace_pids(proc.pid)
        out, err = proc.communicate(timeout=timeout)
    finally:
        _end(pids + _namespace_pids(proc.pid))
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-4000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_ray_equals_single_process_and_retries_a_crashed_actor(src, reference, tmp_path):
    prefix = tmp_path / "out"
    lines = {r["mode"]: r for r in _run(src, prefix, "plain", "crash", "encoder")}
    ref = digest(reference)
    assert len([n for n in ref if n.endswith(".tar.gz")]) == 6
    assert digest(Path(f"{prefix}-plain")) == ref, "the same files, byte for byte"
    assert lines["plain"] == {"mode": "plain", "encoded": 24, "skipped": 0}
    assert Path(f"{prefix}-crash.marker").exists(), "the actor did die once"
    assert digest(Path(f"{prefix}-crash")) == ref, "the retried unit is written once, the same bytes"
    keys = []
    for stats in sorted(Path(f"{prefix}-crash", "stats").glob("*.json")):
        keys += [(stats.name.split("-")[0], k) for k in json.loads(stats.read_text())["keys"]]
    assert len(keys) == len(set(keys)) == 24
    assert lines["encoder"] == {"mode": "encoder", "rows": 6, "labels": [0, 0, 0, 1, 1, 1], "psnr_ok": True}


def test_ray_resumes_after_the_job_is_killed(src, reference, tmp_path):
    prefix = tmp_path / "out"
    out = Path(f"{prefix}-slow")
    proc = subprocess.Popen(_cmd(str(src), str(prefix), "slow"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    pids: list[int] = []
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            pids = sorted(set(pids) | set(_namespace_pids(proc.pid)))
            if len(list(out.glob("*.tar.gz"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before it could be killed"
    finally:
        _end(sorted(set(pids) | set(_namespace_pids(proc.pid))))  # kill -9: driver, raylet, workers
        proc.wait()
    done = len(list(out.glob("*.tar.gz")))
    assert 2 <= done < 6 and not (out / "ndf_dataset.json").exists()
    lines = _run(src, prefix, "slow")
    assert lines[0]["skipped"] >= 2 and lines[0]["encoded"] <= 24 - 4 * 2
    assert digest(out) == digest(reference)
