"""Exact, resumable epochs: what :func:`~.pipeline.epoch_dataset` returns, with ``state_dict()`` / ``load_state_dict()``.

:class:`EpochDataset` is a WebDataset pipeline (append ``.map``, ``.decode``, ``.to_tuple``,
``.batched`` as usual) whose first stage reads this process's part of an epoch and counts
where it is. Per rank and DataLoader worker its state is small JSON data: the shards
(*pieces*) it was given, how many samples it has taken from each one it opened, how many of
those are finished, and how many samples it has passed on. That is what torchdata's
``StatefulDataLoader`` collects from every worker after each step (the ``Stateful``
protocol: ``state_dict()`` then ``load_state_dict()`` in a fresh worker, before ``iter()``).

Why counts and not the shuffle buffer itself: the buffer is a pure function of the samples
taken and a per-worker seed, so a restore replays the buffer's random choices on sample
*indices* (no I/O, a third of a microsecond per sample already seen), reads back the samples
still in the buffer (their shards, each up to the last one needed), skips the part of the
current shard already taken and goes on with the same random state. The state a worker sends after every step stays a few integers however
large the buffer is (the format, its checks and the elastic split: :mod:`.epochstate`).

**Exact resume.** ``StatefulDataLoader.load_state_dict(saved)`` in a fresh process gives the
samples not yet seen in exactly the order they would have come. The stages after the source
must pass samples on without holding any back: ``map``, ``decode``, ``to_tuple``,
``select``, ``rename`` and this class's ``batched`` do; ``shuffle``, ``unbatched``,
``slice``, ``rsample``, ``with_epoch`` / ``repeat`` and WebDataset's own ``batched`` (it
reads the first sample of the next batch before yielding one) do not, and ``state_dict()``
refuses them with a ``ValueError``.

**Elastic resume.** The states of all the ranks of a run (each rank's ``loader.state_dict()``)
describe what is left of the epoch: ``epoch_dataset(urls, ..., resume=[state_rank0,
state_rank1, ...])`` on any number of ranks and workers splits what is left (the samples in
the shuffle buffers, the rest of the current shards, the shards not started) between them,
so every remaining sample is seen exactly once, in a new order fixed by those states.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

import webdataset as wds
from webdataset import filters
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.utils import pytorch_worker_info

from ...data.tarcheck import open_verified
from .epochstate import STATE_FORMAT, VERSION, checked, digest, remaining_pieces, shuffle_buffer, simulate

__all__ = ["EpochDataset"]

#: stages that hold samples back (or count them) and so can not follow a resumable source
_UNSAFE = {
    filters._shuffle: "shuffle",
    filters._unbatched: "unbatched",
    filters._unlisted: "unlisted",
    filters._rsample: "rsample",
    itertools.islice: "slice",
    filters._batched: "webdataset's batched (it reads ahead; use this dataset's .batched)",
}


class EpochDataset(wds.DataPipeline, wds.FluidInterface):
    """One epoch over ``shards`` (already in epoch order), exactly once across ranks and workers, resumable.

    Made by :func:`~.pipeline.epoch_dataset`; the arguments are its (see the module docstring
    for what ``state_dict()`` holds and which stages may follow).
    """

    def __init__(
        self,
        shards: Sequence[str],
        *,
        seed: int,
        epoch: int,
        shuffle: int,
        handler: Callable[[BaseException], bool],
        resume: Sequence[Any] | None = None,
    ) -> None:
        super().__init__()
        self.source = _EpochSource([str(u) for u in shards], int(seed), int(epoch), int(shuffle), handler, resume)
        self.append(self.source)

    def __iter__(self) -> Iterator[Any]:
        self.source.arm()  # the restored state is checked (and used) from now on, not at the first sample
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """Where this rank and worker stands in the epoch (JSON data; see the module docstring).

        Raises:
            ValueError: a stage after the source would make a restore inexact.
        """
        if self.repetitions != 1 or self.nsamples > 0:
            raise ValueError("with_epoch() / repeat() can not be resumed; build one epoch_dataset per epoch")
        for stage in self.pipeline[1:]:
            f = getattr(stage, "f", None)
            name = next((n for g, n in _UNSAFE.items() if g is f), None)
            if name is None and isinstance(stage, filters.detshuffle):
                name = "detshuffle"
            if name is not None:
                raise ValueError(f"a {name} stage holds samples back, so its state can not be saved exactly; "
                                 "shuffle with epoch_dataset(shuffle=N) and batch with .batched()")  # fmt: skip
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state`` at the next ``iter()``: it must be of this rank and worker of the same run.

        Raises:
            ValueError: not such a state (malformed, another epoch, another shuffle buffer, a
                run resumed differently); another rank / worker layout is refused at ``iter()``
                (pass every rank's state to ``epoch_dataset(resume=...)`` instead).
        """
        self.source.load_state_dict(state)

    def batched(self, batchsize: int, collation_fn: Any = filters.default_collation_fn, partial: bool = True) -> Any:
        """Batches of ``batchsize`` samples, like WebDataset's, but each yielded before the next sample is read."""
        return self.compose(filters.FilterFunction(_batched, batchsize, collation_fn, partial))

    def pieces_for(self, rank: int, world: int, worker: int, workers: int) -> list[list]:
        """The pieces ``[url, start, positions]`` that a rank's worker reads, without reading anything."""
        return self.source.pieces_for(rank, world, worker, workers)


def _batched(data: Iterator[Any], batchsize: int, collation_fn: Any, partial: bool) -> Iterator[Any]:
    batch: list = []
    for sample in data:
        batch.append(sample)
        if len(batch) == batchsize:
            yield collation_fn(batch) if collation_fn is not None else batch
            batch = []
    if batch and partial:
        yield collation_fn(batch) if collation_fn is not None else batch


class _Cursor:
    """The position of one iteration: ``head`` (fixed for it) and the counts that advance."""

    __slots__ = ("head", "counts", "finished", "emitted", "replay")

    def __init__(self, head: dict[str, Any], counts: list[int], finished: int, emitted: int, replay: Any = None):
        self.head, self.counts, self.finished, self.emitted = head, counts, finished, emitted
        self.replay = replay  # a restored state's shuffle buffer refs and random state (epochstate.simulate)

    def state(self) -> dict[str, Any]:
        return {**self.head, "counts": list(self.counts), "finished": self.finished, "emitted": self.emitted}


class _EpochSource:
    """The first stage of an :class:`EpochDataset`: a callable giving the samples; shared by its ``compose`` copies."""

    def __init__(self, shards: list[str], seed: int, epoch: int, shuffle: int, handler: Any, resume: Any) -> None:
        self.shards, self.shuffle, self.handler = shards, max(0, shuffle), handler
        self.epoch_id = digest(["ndf-epoch", shards, seed, epoch])
        self.resumed = None if resume is None else remaining_pieces(resume, self.epoch_id)
        self.plan = "fresh" if self.resumed is None else digest(self.resumed)
        self._cursor: _Cursor | None = None
        self._pending: dict[str, Any] | None = None
        self._armed = False

    def pieces_for(self, rank: int, world: int, worker: int, workers: int) -> list[list]:
        if self.resumed is not None:
            return [list(p) for p in self.resumed[rank * workers + worker :: world * workers]]
        return [[u, 0, None] for u in self.shards[rank::world][worker::workers]]

    def _head(self, who: tuple[int, int, int, int]) -> dict[str, Any]:
        rank, world, worker, workers = who
        return {"format": STATE_FORMAT, "version": VERSION, "epoch": self.epoch_id, "plan": self.plan,
                "rank": rank, "world": world, "worker": worker, "workers": workers, "shuffle": self.shuffle,
                "rng": f"{self.epoch_id}/{self.plan}/{rank}/{world}/{worker}/{workers}",
                "pieces": self.pieces_for(*who)}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        if self._cursor is not None:
            return self._cursor.state()
        if self._pending is not None:
            return json.loads(json.dumps(self._pending))
        return {**self._head(pytorch_worker_info()), "counts": [], "finished": 0, "emitted": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = checked(state)
        if state["epoch"] != self.epoch_id:
            raise ValueError("the state is of another epoch (other shards, seed or epoch)")
        if state["shuffle"] != self.shuffle:
            raise ValueError(
                f"the state is of a shuffle buffer of {state['shuffle']} samples, this one has {self.shuffle}"
            )
        if state["plan"] != self.plan:
            how = "a fresh epoch" if state["plan"] == "fresh" else "an epoch resumed from saved states"
            raise ValueError(f"the state is of {how}: build epoch_dataset with the resume= of the run that saved it")
        self._pending, self._cursor, self._armed = state, None, False

    def arm(self) -> None:
        """Start an iteration now: take the pending state (checked against this rank and worker) or a fresh one."""
        who = pytorch_worker_info()
        state, self._pending = self._pending, None
        if state is None:
            self._cursor = _Cursor(self._head(who), [], 0, 0)
        else:
            if [state[k] for k in ("rank", "world", "worker", "workers")] != list(who):
                raise ValueError(f"the state is of rank {state['rank']}/{state['world']} worker {state['worker']}/"
                                 f"{state['workers']}, this is rank {who[0]}/{who[1]} worker {who[2]}/{who[3]}; to "
                                 "resume on another number of ranks or workers pass every rank's state to "
                                 "epoch_dataset(resume=...)")  # fmt: skip
            replay = simulate(state)  # a state that does not add up is refused here, before any I/O
            head = {k: v for k, v in state.items() if k not in ("counts", "finished", "emitted")}
            self._cursor = _Cursor(head, state["counts"], state["finished"], state["emitted"], replay)
        self._armed = True

    def __call__(self) -> Iterator[dict[str, Any]]:
        if not self._armed:
            self.arm()
        self._armed = False
        return self._run(self._cursor)

    # ------------------------------------------------------------------ reading

    def _read(self, cur: _Cursor) -> Iterator[dict[str, Any]]:
        """The samples of the pieces from the cursor on; the counts advance before each is passed on."""
        pieces = cur.head["pieces"]
        while cur.finished < len(pieces):
            k = cur.finished
            if len(cur.counts) == k:
                cur.counts.append(0)
            for sample in _piece_samples(pieces[k], self.handler, skip=cur.counts[k]):
                cur.counts[k] += 1
                yield sample
            cur.finished = k + 1

    def _run(self, cur: _Cursor) -> Iterator[dict[str, Any]]:
        size = cur.head["shuffle"]
        if size == 0:
            for sample in self._read(cur):
                cur.emitted += 1
                yield sample
            return
        rng, buf = random.Random(cur.head["rng"]), []
        if cur.replay is not None:
            refs, rng = cur.replay
            cur.replay = None
            buf = self._refill(cur.head["pieces"], refs)
        for sample in shuffle_buffer(self._read(cur), size, rng, buf):
            cur.emitted += 1
            yield sample

    def _refill(self, pieces: list[list], refs: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """The samples of a restored shuffle buffer, read again (only those) from their shards."""
        found: dict[tuple[int, int], dict] = {}
        wanted: dict[int, set[int]] = {}
        for k, j in refs:
            wanted.setdefault(k, set()).add(j)
        for k, js in sorted(wanted.items()):
            last = max(js)
            for j, sample in enumerate(_piece_samples(pieces[k], self.handler, skip=0)):
                if j in js:
                    found[(k, j)] = sample
                if j >= last:
                    break
        missing = [r for r in refs if r not in found]
        if missing:
            k, j = missing[0]
            raise ValueError(f"sample {j} of {pieces[k][0]} (in the saved shuffle buffer) is not there any more: "
                             f"the shards changed since the state was saved ({len(missing)} samples missing)")  # fmt: skip
        return [found[r] for r in refs]


def _piece_samples(piece: list, handler: Any, skip: int) -> Iterator[dict[str, Any]]:
    """A piece's samples (``[url, start, positions]``), read as ``NDFWebDataset`` reads a shard, the first ``skip`` left out.

    The shard is opened as WebDataset's ``StreamingOpen`` does and verified
    (:func:`~ndf_datasets.data.tarcheck.open_verified`); WebDataset's own tar expansion and
    grouping make the samples, so they are those of :class:`~.pipeline.NDFWebDataset`, errors
    (a damaged shard: ``NDFShardError``) going to ``handler`` the same way.
    """
    url, start, positions = piece
    wanted = None if positions is None else set(positions)
    last = None if positions is None else max(positions, default=-1)
    parsed = urlparse(url)
    local = parsed.path if parsed.scheme in ("", "file") else None
    raw = None
    try:
        raw = open(local, "rb") if local is not None else wds.gopen(url, "rb")
        stream = open_verified(raw, url)
    except Exception as exc:  # noqa: BLE001 - the handler decides, as in WebDataset
        if raw is not None:
            raw.close()
        exc.args = exc.args + (url,)
        if handler(exc):
            return
        raise
    try:
        source = {"url": url, "stream": stream, **({"local_path": local} if local is not None else {})}
        taken = 0
        for pos, sample in enumerate(group_by_keys(tar_file_expander([source], handler=handler), handler=handler)):
            if last is not None and pos > last:
                break
            if pos < start or (wanted is not None and pos not in wanted):
                continue
            taken += 1
            if taken > skip:
                yield sample
    finally:
        stream.close()
