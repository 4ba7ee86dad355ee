"""The state of an :class:`~.resumable.EpochDataset` worker: its format, its checks, and what is left of an epoch.

A worker's state (JSON data, one per rank and DataLoader worker)::

    {"format": "ndf-epoch-state", "version": 1,
     "epoch": <digest of the shard list, seed and epoch>,
     "plan": "fresh" | <digest of the pieces of a run resumed from saved states>,
     "rank": r, "world": R, "worker": w, "workers": W,
     "shuffle": <buffer size>, "rng": <the buffer's seed string>,
     "pieces": [[url, start, positions or null], ...],   # what this worker reads, in order
     "counts": [n0, n1, ...],  # samples taken from each piece opened so far
     "finished": k,            # pieces finished (the next one, if opened, is being read)
     "emitted": e}             # samples passed on to the next stage

A piece is the samples of a shard at ``positions`` (indices in the shard, increasing) or, with
``null``, at every position from ``start`` on. The shuffle buffer is not stored: it is a pure
function of the counts, ``emitted`` and the seed, and :func:`simulate` replays it on
``(piece, index)`` pairs (the same :func:`shuffle_buffer` code the reader runs on samples).
:func:`remaining_pieces` turns the states of every rank and worker of a run into the pieces
still unseen: the buffers' samples, the rest of the current pieces, the pieces not started.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["STATE_FORMAT", "VERSION", "checked", "digest", "remaining_pieces", "shuffle_buffer", "simulate"]

#: the ``format`` of a worker's state dict
STATE_FORMAT = "ndf-epoch-state"
#: its version
VERSION = 1


def digest(obj: Any) -> str:
    """A short content hash of JSON data (the epoch and plan identities of a state)."""
    return hashlib.sha256(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()[:24]


def shuffle_buffer(items: Iterator[Any], size: int, rng: random.Random, buf: list) -> Iterator[Any]:
    """The shuffle buffer of ``size`` items, also run on sample indices by :func:`simulate` (``buf`` changes in place).

    Full, each item in sends a random one out; at the end the rest leave in random order.
    """
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        out, buf[j] = buf[j], item
        yield out
    while buf:
        j = rng.randrange(len(buf))
        buf[j], buf[-1] = buf[-1], buf[j]
        yield buf.pop()


def checked(state: Any) -> dict[str, Any]:
    """A JSON copy of ``state`` once its fields have the right types and add up (ValueError otherwise)."""
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not an epoch_dataset worker state (format {STATE_FORMAT!r})")
    if state.get("version") != VERSION:
        raise ValueError(
            f"epoch_dataset state version {state.get('version')!r} is not supported (this reader: {VERSION})"
        )
    try:
        state = json.loads(json.dumps(state))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"epoch_dataset state is not JSON data ({exc})") from None
    for name, kind in (("epoch", str), ("plan", str), ("rng", str), ("pieces", list), ("counts", list)) + tuple(
        (n, int) for n in ("rank", "world", "worker", "workers", "shuffle", "finished", "emitted")
    ):
        if not isinstance(state.get(name), kind) or isinstance(state.get(name), bool):
            raise ValueError(f"epoch_dataset state: {name!r} is missing or not a {kind.__name__}")
    for p in state["pieces"]:
        ok = isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and isinstance(p[1], int) and p[1] >= 0
        if not ok or not (p[2] is None or (isinstance(p[2], list) and all(isinstance(i, int) for i in p[2]))):
            raise ValueError(f"epoch_dataset state: a piece is not [url, start, positions or None]: {p!r:.80}")
        if p[2] is not None and (min(p[2], default=0) < 0 or any(a >= b for a, b in zip(p[2], p[2][1:]))):
            raise ValueError(f"epoch_dataset state: a piece's positions are not increasing: {p!r:.80}")
    counts, finished, n = state["counts"], state["finished"], len(state["pieces"])
    if (
        not all(isinstance(c, int) and c >= 0 for c in counts)
        or any(p[2] is not None and c > len(p[2]) for p, c in zip(state["pieces"], counts))
        or not 0 <= finished <= n
        or len(counts) not in (finished, finished + 1)
        or len(counts) > n
        or not 0 <= state["rank"] < state["world"]
        or not 0 <= state["worker"] < state["workers"]
        or min(state["shuffle"], state["emitted"]) < 0
    ):
        raise ValueError("epoch_dataset state: counts, finished, rank or worker out of range")
    return state


def simulate(state: dict[str, Any]) -> tuple[list[tuple[int, int]], random.Random]:
    """The shuffle buffer (as ``(piece, index)`` refs) and random state of a saved state, replayed without I/O.

    Raises:
        ValueError: the counts and the number of samples passed on do not add up.
    """
    counts, emitted, size = state["counts"], state["emitted"], state["shuffle"]
    total, ended = sum(counts), state["finished"] == len(state["pieces"])
    rng = random.Random(state["rng"])
    if size == 0:
        if emitted != total:
            raise ValueError(f"epoch_dataset state: {emitted} samples passed on, {total} read (no shuffle buffer)")
        return [], rng
    # streaming, the buffer is full: one sample out per sample in; draining (all pieces finished): fewer in
    if not (
        emitted == total == 0
        or (emitted >= 1 and emitted == total - size)
        or (ended and total - size < emitted <= total)
    ):
        raise ValueError(f"epoch_dataset state: {emitted} samples passed on do not add up with {total} read "
                         f"through a buffer of {size}")  # fmt: skip
    buf: list[tuple[int, int]] = []
    refs = ((k, j) for k, c in enumerate(counts) for j in range(c))
    for _ in itertools.islice(shuffle_buffer(refs, size, rng, buf), emitted):
        pass
    return buf, rng


def _worker_states(obj: Any) -> Iterator[dict]:
    """Every epoch_dataset worker state inside ``obj`` (a StatefulDataLoader state, a list of them, a state)."""
    if isinstance(obj, dict):
        if obj.get("format") == STATE_FORMAT:
            yield obj
            return
        if obj.get("_steps_since_snapshot"):
            raise ValueError("a loader state saved between snapshots (snapshot_every_n_steps > 1) can only be "
                             "restored on the same ranks and workers; save at a snapshot step")  # fmt: skip
        for value in obj.values():
            yield from _worker_states(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _worker_states(value)


def remaining_pieces(saved: Sequence[Any], epoch_id: str) -> list[list]:
    """What is left of an epoch, as pieces ``[url, start, positions]``, from the states of all ranks and workers of a run.

    Args:
        saved: every rank's ``StatefulDataLoader.state_dict()`` (or worker states), any nesting.
        epoch_id: the epoch they must be of.

    Raises:
        ValueError: malformed states, states of another epoch, or states that do not cover
            every rank and worker of the saving run exactly once.
    """
    states = [checked(s) for s in _worker_states(list(saved))]
    if not states:
        raise ValueError("resume= holds no epoch_dataset state")
    first = states[0]
    for s in states:
        if s["epoch"] != epoch_id:
            raise ValueError("a state in resume= is of another epoch (other shards, seed or epoch)")
        if (s["plan"], s["world"], s["workers"]) != (first["plan"], first["world"], first["workers"]):
            raise ValueError("the states in resume= are of different runs (world size, workers or plan differ)")
    world, workers = first["world"], first["workers"]
    seen = sorted((s["rank"], s["worker"]) for s in states)
    if seen != [(r, w) for r in range(world) for w in range(workers)]:
        raise ValueError(
            f"resume= must hold the state of each of the {world} ranks x {workers} workers once, got {seen}"
        )
    out: list[list] = []
    for s in sorted(states, key=lambda s: (s["rank"], s["worker"])):
        pieces, counts, finished = s["pieces"], s["counts"], s["finished"]
        refs, _ = simulate(s)
        by_url: dict[str, set[int]] = {}
        for k, j in refs:
            url, start, positions = pieces[k]
            by_url.setdefault(url, set()).add(start + j if positions is None else positions[j])
        out += [[url, 0, sorted(p)] for url, p in by_url.items()]
        if finished < len(counts):  # the piece being read: the rest of it
            url, start, positions = pieces[finished]
            c = counts[finished]
            rest = [url, start + c, None] if positions is None else [url, 0, positions[c:]]
            if rest[2] is None or rest[2]:
                out.append(rest)
        out += [list(p) for p in pieces[len(counts) :]]
    return out
