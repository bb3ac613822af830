"""The concurrent fan-out writer.

Batches come from a producer (typically: embed batch k+1 while batch k is written) and go
through a bounded queue to one worker thread per store, so LanceDB and LibSQL write the same
batch concurrently. A semaphore bounds the batches in flight: when the stores fall behind,
the producer blocks (backpressure) instead of piling up vectors in memory. Transient errors
are retried with exponential backoff; a batch that keeps failing stops the run with an error
that names the store and the batch.

Replacing days: a run writes its rows as a new version, beside the rows already there, each
row stamped with the run's `ingest_id`. `begin` notes the versions the days hold; once every
store holds the whole new version, `commit` drops those. If a batch keeps failing, `rollback`
drops the run's own rows again, so the days keep exactly the rows they had. A run killed
outright leaves its partial version beside the old one (search shows one hit per memory);
the next run of those days drops both.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from .errors import StoreError, StoreUnavailable, detail
from .lance_store import LanceStore
from .record_store import SystemOfRecord

# Errors of the systems of record reach here classified (errors.StoreError); these markers are
# for the vector store, whose errors carry no class or code to tell them by.
TRANSIENT_MARKERS = (
    "busy",
    "commit conflict",  # LanceDB: "[Retryable] commit conflict for version N: ... Please retry."
    "retryable",
    "conflict",
    "too many concurrent writ",  # LanceDB: "Too many concurrent writers"
    "too many open files",
    "timed out",
)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: lock contention and optimistic-commit conflicts."""
    if isinstance(exc, StoreError):  # classified by the store's adapter
        return exc.transient
    if isinstance(exc, LeaseLost):
        return False
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


@dataclass
class Batch:
    index: int
    memories: pa.Table  # memory rows whose first chunk is in this batch
    chunks: pa.Table  # chunk rows with `vector`


class Sink(Protocol):
    name: str

    def begin(self) -> None: ...
    def write(self, batch: Batch) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class VersionStore(Protocol):
    def versions(self, days: Sequence[str]) -> list[str]: ...
    def drop_versions(self, days: Sequence[str], ingest_ids: Sequence[str]) -> None: ...


@dataclass
class _VersionedSink:
    """The version bookkeeping both stores share; subclasses write the batches."""

    store: VersionStore
    days: Sequence[str]
    ingest_id: str
    replaces: list[str] = field(default_factory=list)  # the versions `commit` drops

    def begin(self) -> None:
        self.replaces = [v for v in self.store.versions(self.days) if v != self.ingest_id]

    def commit(self) -> None:
        self.store.drop_versions(self.days, self.replaces)

    def rollback(self) -> None:
        self.store.drop_versions(self.days, [self.ingest_id])


@dataclass
class LanceSink(_VersionedSink):
    store: LanceStore
    name = "lancedb"

    def write(self, batch: Batch) -> None:
        self.store.write(batch.chunks, self.ingest_id)


@dataclass
class LibsqlSink(_VersionedSink):
    store: SystemOfRecord
    name = "libsql"

    def write(self, batch: Batch) -> None:
        self.store.write(batch.memories, batch.chunks, self.ingest_id)

    def commit(self) -> None:
        """The old versions go, and the quarantine the run staged comes in, at once."""
        self.store.commit_days(self.days, self.ingest_id, self.replaces)

    def rollback(self) -> None:
        """The run's rows and its staged quarantine go: the days keep the quarantine they had."""
        self.store.rollback_days(self.days, self.ingest_id)


class WriteError(RuntimeError):
    pass


class LeaseLost(WriteError):
    """Not retried: the lease is gone, another ingestion holds the day."""


@dataclass
class DayLease:
    """Serialises ingestions of the same days: while one run replaces a day, another waits.

    Without it two runs of one day begun at once would each keep the other's rows (a run only
    drops the versions it found when it began), and the day would hold both. The lease
    lives in LibSQL (shared by every process of every run), is re-entrant for the stores of
    one run (same ingest_id), is renewed as batches are written, and does not outlive a
    dead process on this host or its expiry elsewhere."""

    store: SystemOfRecord
    days: Sequence[str]
    ingest_id: str
    holder: str
    ttl: float = 600.0
    wait: float = 3600.0
    on_wait: Callable[[str], None] | None = None  # hears what a waiting run waits for (log it at WARNING)
    remind: float = 300.0

    def acquire(self) -> None:
        """Take the lease, waiting (up to `wait` seconds) while another ingestion holds one of
        the days; `on_wait` hears once what it waits for, and again when that changes or
        every `remind` seconds, so that a waiting run never looks hung."""
        deadline = time.monotonic() + self.wait
        delay = 0.05
        told: tuple | None = None
        told_at = 0.0
        while True:
            blocking = self.store.try_lease(self.days, self.ingest_id, self.holder, self.ttl)
            if not blocking:
                return
            lease = blocking[0]
            if time.monotonic() > deadline:
                raise WriteError(
                    f"day {lease['day']} is being written by ingestion {lease['ingest_id']} "
                    f"(pid {lease['pid']} on {lease['host']}) and it did not finish in {self.wait:.0f}s"
                )
            holder = (lease["day"], lease["ingest_id"])
            if self.on_wait and (holder != told or time.monotonic() - told_at >= self.remind):
                left = deadline - time.monotonic()
                self.on_wait(
                    f"day {lease['day']} is being written by ingestion {lease['ingest_id']} (pid {lease['pid']} "
                    f"on {lease['host']}): waiting for it to finish, up to {left:.0f}s more, before writing"
                )
                told, told_at = holder, time.monotonic()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def renew(self) -> None:
        """Extend the lease; losing it (it expired and another ingestion took a day) is an
        error: two runs would then replace the same day at once."""
        blocking = self.store.try_lease(self.days, self.ingest_id, self.holder, self.ttl)
        if blocking:
            lease = blocking[0]
            raise LeaseLost(
                f"the lease on day {lease['day']} expired and ingestion {lease['ingest_id']} "
                f"(pid {lease['pid']} on {lease['host']}) took it: this run stops rather than write beside it"
            )

    def release(self) -> None:
        self.store.release_lease(self.days, self.holder)


@dataclass
class RetryPolicy:
    attempts: int = 6
    base_delay: float = 0.05
    max_delay: float = 2.0

    def call(self, fn: Callable[[], None], what: str, on_retry: Callable[[str], None] | None = None) -> int:
        """Run `fn`, retrying transient errors; returns the number of retries it took."""
        for attempt in range(1, self.attempts + 1):
            try:
                fn()
                return attempt - 1
            except Exception as exc:
                if not is_transient(exc) or attempt == self.attempts:
                    if isinstance(exc, StoreUnavailable):  # already names the cause and the setting
                        raise StoreUnavailable(f"{what} failed after {attempt} attempt(s): {exc}") from exc
                    raise WriteError(f"{what} failed after {attempt} attempt(s): {type(exc).__name__}: {exc}") from exc
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
                if on_retry:
                    on_retry(f"{what}: {exc} (retry {attempt} in {delay:.2f}s)")
                time.sleep(delay)
        raise AssertionError("unreachable")


@dataclass
class WriteStats:
    batches: int = 0
    chunks: int = 0
    memories: int = 0
    retries: int = 0
    seconds: float = 0.0


_DONE = object()


class FanOutWriter:
    """Writes batches to every sink concurrently, in order per sink, with bounded memory."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        max_in_flight: int = 2,
        retry: RetryPolicy | None = None,
        on_batch: Callable[[Batch], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        lease: DayLease | None = None,
    ):
        if not sinks:
            raise ValueError("at least one sink")
        self.sinks = list(sinks)
        self.max_in_flight = max_in_flight
        self.retry = retry or RetryPolicy()
        self.on_batch = on_batch
        self.on_retry = on_retry
        self.lease = lease

    def run(self, batches: Iterable[Batch], *, commit: bool = True) -> WriteStats:
        """Write every batch to every sink, then commit them (unless `commit` is false: the
        caller commits once other writers of the same run are done). On failure the sinks
        are rolled back and the error raised."""
        if self.lease is not None:
            self.lease.acquire()
        try:
            try:
                stats = self._run(batches)
            except BaseException as exc:
                self.rollback(exc)
                raise
            if commit:
                self.commit()
            return stats
        finally:
            if self.lease is not None:
                self.lease.release()

    def commit(self) -> None:
        """Drop the versions the days held before: only once every sink holds the new one."""
        for sink in self.sinks:
            self.retry.call(sink.commit, f"committing {sink.name}", self.on_retry)

    def rollback(self, error: BaseException) -> None:
        """Take the run's rows out of every sink again; a rollback that fails too (the disk
        is still full, say) is added to `error`: the next run of the days removes them."""
        for sink in self.sinks:
            try:
                self.retry.call(sink.rollback, f"removing this run's rows from {sink.name}", self.on_retry)
            except Exception as exc:  # noqa: BLE001 - reported with the error that caused it
                error.add_note(f"{exc}; the next run of these days removes them")

    def _run(self, batches: Iterable[Batch]) -> WriteStats:
        for sink in self.sinks:
            self.retry.call(sink.begin, f"preparing {sink.name}", self.on_retry)
        return _FanOutRun(self).execute(batches)


class _FanOutRun:
    """The state of one FanOutWriter run: one worker thread and queue per sink, the batches
    in flight (at most max_in_flight), and the first failure, which stops every worker."""

    def __init__(self, writer: FanOutWriter):
        self.writer = writer
        self.stats = WriteStats()
        self.in_flight = threading.BoundedSemaphore(writer.max_in_flight)
        self.queues = {sink.name: queue.Queue(maxsize=writer.max_in_flight) for sink in writer.sinks}
        self.pending: dict[int, int] = {}  # batch index -> sinks still writing it
        self.lock = threading.Lock()
        self.failure: list[BaseException] = []
        self.stop = threading.Event()

    def execute(self, batches: Iterable[Batch]) -> WriteStats:
        started = time.perf_counter()
        sinks = self.writer.sinks
        workers = [threading.Thread(target=self._work, args=(s,), name=f"write-{s.name}", daemon=True) for s in sinks]
        for worker in workers:
            worker.start()
        try:
            self._feed(batches)
        except BaseException:
            self.stop.set()
            raise
        finally:
            for sink in sinks:
                self.queues[sink.name].put(_DONE)
            for worker in workers:
                worker.join()
        if self.failure:
            raise self.failure[0]
        self.stats.seconds = time.perf_counter() - started
        return self.stats

    def _feed(self, batches: Iterable[Batch]) -> None:
        """Hand each batch to every sink's queue, waiting while max_in_flight are unwritten."""
        for batch in batches:
            self.in_flight.acquire()  # backpressure
            if self.stop.is_set():
                self.in_flight.release()
                break
            with self.lock:
                self.pending[batch.index] = len(self.writer.sinks)
            self.stats.batches += 1
            self.stats.chunks += batch.chunks.num_rows
            self.stats.memories += batch.memories.num_rows
            for sink in self.writer.sinks:
                self.queues[sink.name].put(batch)

    def _fail(self, exc: BaseException) -> None:
        with self.lock:
            self.failure.append(exc)
        self.stop.set()

    def _work(self, sink: Sink) -> None:
        """A sink's worker: its batches in order, with retries; once something failed, it
        drains its queue without writing."""
        q = self.queues[sink.name]
        retry, on_retry = self.writer.retry, self.writer.on_retry
        while True:
            item = q.get()
            if item is _DONE:
                return
            if not self.stop.is_set():
                try:
                    retries = retry.call(
                        lambda item=item: sink.write(item), f"writing batch {item.index} to {sink.name}", on_retry
                    )
                    with self.lock:
                        self.stats.retries += retries
                except BaseException as exc:  # noqa: BLE001 - handed to the caller by execute
                    self._fail(exc)
            self._release(item)

    def _release(self, item: Batch) -> None:
        """One sink is done with the batch; the last one frees its place in flight."""
        with self.lock:
            self.pending[item.index] -= 1
            last = self.pending[item.index] == 0
            if last:
                del self.pending[item.index]
        if not last:
            return
        self.in_flight.release()
        try:
            self._after_batch(item)
        except BaseException as exc:  # noqa: BLE001 - a worker must never die silently
            self._fail(exc)

    def _after_batch(self, item: Batch) -> None:
        """Every eighth batch renews the day lease; every batch written goes to on_batch."""
        writer = self.writer
        if writer.lease is not None and item.index % 8 == 7:
            # fatal when it fails: past its ttl another run of the days would write beside this one
            writer.retry.call(writer.lease.renew, "renewing the day lease", writer.on_retry)
        if writer.on_batch and not self.stop.is_set():
            writer.on_batch(item)


def write_one_store(
    sink: Sink,
    run_sinks: Sequence[Sink],
    batches: Iterable[Batch],
    *,
    libsql: SystemOfRecord,
    ingest_id: str,
    lease: DayLease | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> WriteStats:
    """One store's part of a run whose stores are written by separate processes (the Dagster
    writer ops), left uncommitted: the step after them commits every sink of the run.

    A part that fails records the failure in LibSQL, then takes the run's rows out of every
    store (`run_sinks`); the other parts see the record after their next batch, or at their
    end, stop and do the same. So a failed run leaves both stores as they were."""

    def stop_if_failed() -> None:
        if (reason := libsql.failure(ingest_id)) is not None:
            raise WriteError(f"stopped, the run failed elsewhere: {reason}")

    def after_batch(batch: Batch) -> None:
        if on_batch:
            on_batch(batch)
        stop_if_failed()

    try:
        stats = FanOutWriter([sink], on_batch=after_batch, on_retry=on_retry, lease=lease).run(batches, commit=False)
        stop_if_failed()
        return stats
    except Exception as exc:
        try:
            libsql.mark_failed(ingest_id, f"writing {sink.name} failed: {detail(exc)}")
        except Exception as mark_exc:  # noqa: BLE001 - the other parts may then commit theirs
            exc.add_note(f"the failure could not be recorded for the other writers: {mark_exc}")
        FanOutWriter(run_sinks, on_retry=on_retry).rollback(exc)
        raise
