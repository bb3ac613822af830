"""The fan-out writer with real LanceDB and LibSQL: order, overlap, retry, failure, re-run."""

import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from agentmem_dagster.engine import libsql_store
from agentmem_dagster.engine.chunking import chunk_memories, with_vectors
from agentmem_dagster.engine.embedding import Embedder
from agentmem_dagster.engine.errors import StoreUnavailable
from agentmem_dagster.engine.ingest import batches_from_embedded, embedded_batches, ingest
from agentmem_dagster.engine.lance_store import LanceStore
from agentmem_dagster.engine.libsql_store import LibsqlPool, LibsqlStore
from agentmem_dagster.engine.records import MEMORY_SCHEMA, QuarantineRecord
from agentmem_dagster.engine.writer import (
    Batch,
    FanOutWriter,
    LanceSink,
    LibsqlSink,
    RetryPolicy,
    WriteError,
    write_one_store,
)

DAY = "2024-06-01"


def memories(n: int, prefix: str = "m", day: str = DAY) -> pa.Table:
    rows = [
        {
            "memory_id": f"{prefix}{i}", "user_id": f"u{i % 3}", "agent_id": "a", "session_id": "s", "role": "user",
            "content": f"{prefix} memory number {i}: " + "words " * (i % 17),
            "created_at": f"{day}T12:00:00.000000Z", "created_at_us": 1717243200000000, "metadata": "{}",
            "content_hash": "0" * 64, "day": day, "source_file": "f.jsonl", "source_line": i + 1,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=MEMORY_SCHEMA)


@pytest.fixture
def stores(tmp_path):
    pool = LibsqlPool(str(tmp_path / "m.db"), size=3, busy_timeout_ms=50)
    yield LanceStore(str(tmp_path / "lance")), LibsqlStore(pool)
    pool.close()


@pytest.fixture(scope="module")
def embedder(static_model):
    return Embedder(*static_model)


def ids(lance: LanceStore, libsql: LibsqlStore) -> tuple[list, list]:
    return sorted(lance.chunk_ids([DAY])), sorted(libsql.chunk_ids([DAY]))


class Recording:
    """A real sink wrapped to record when each batch was written (and to slow it down)."""

    def __init__(self, sink, log, delay=0.0):
        self.sink, self.log, self.delay, self.name = sink, log, delay, sink.name

    def begin(self):
        self.sink.begin()

    def write(self, batch):
        self.log.append((self.name, "start", batch.index, time.perf_counter()))
        time.sleep(self.delay)
        self.sink.write(batch)
        self.log.append((self.name, "end", batch.index, time.perf_counter()))

    def commit(self):
        self.sink.commit()

    def rollback(self):
        self.sink.rollback()


def test_batches_are_written_in_order_to_both_stores_while_the_next_is_embedded(stores, embedder):
    lance, libsql = stores
    table = memories(60)
    chunks = chunk_memories(table, embedder.tokenizer, 256)
    log = []

    def produced():
        for batch in embedded_batches(table, chunks, embedder, batch_chunks=10):
            log.append(("producer", "made", batch.index, time.perf_counter()))
            yield batch

    sinks = [Recording(LanceSink(lance, [DAY], "run1"), log, 0.2), Recording(LibsqlSink(libsql, [DAY], "run1"), log, 0.2)]
    stats = FanOutWriter(sinks, max_in_flight=2).run(produced())

    assert stats.batches == 6 and stats.chunks == 60 and stats.memories == 60
    for name in ("lancedb", "libsql"):
        assert [i for n, what, i, _ in log if n == name and what == "end"] == list(range(6))
    when = {(n, what, i): t for n, what, i, t in log}
    # the next batch was embedded while the previous one was being written ...
    assert when[("producer", "made", 1)] < when[("lancedb", "end", 0)]
    # ... the two stores wrote the same batch at the same time ...
    assert when[("libsql", "start", 2)] < when[("lancedb", "end", 2)]
    assert when[("lancedb", "start", 2)] < when[("libsql", "end", 2)]
    # ... and the producer never ran more than max_in_flight batches (+ the one in hand) ahead
    # of the slower store (backpressure)
    for i in range(3, 6):
        assert when[("producer", "made", i)] > max(when[("lancedb", "end", i - 3)], when[("libsql", "end", i - 3)])
    lance_ids, libsql_ids = ids(lance, libsql)
    assert lance_ids == libsql_ids and len(lance_ids) == 60


def test_a_locked_database_is_retried_not_surfaced(stores, embedder, tmp_path):
    lance, libsql = stores
    blocker = libsql_store.connect(libsql.pool.url)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for a while
    threading.Timer(0.4, lambda: blocker.execute("ROLLBACK")).start()
    retries = []
    writer = FanOutWriter(
        [LibsqlSink(libsql, [DAY], "run1")], retry=RetryPolicy(attempts=10, base_delay=0.05), on_retry=retries.append
    )
    stats = writer.run(embedded_batches(memories(5), chunk_memories(memories(5), embedder.tokenizer, 256), embedder))
    assert stats.retries >= 1 and retries and "database is locked" in retries[0]
    assert len(libsql.chunk_ids([DAY])) == 5
    blocker.close()


def test_a_lock_that_never_clears_fails_with_a_clear_error(stores, embedder):
    lance, libsql = stores
    blocker = libsql_store.connect(libsql.pool.url)
    blocker.execute("BEGIN IMMEDIATE")
    writer = FanOutWriter([LibsqlSink(libsql, [DAY], "run1")], retry=RetryPolicy(attempts=3, base_delay=0.01))
    table = memories(5)
    with pytest.raises(
        StoreUnavailable, match=r"writing batch 0 to libsql failed after 3 attempt\(s\).*is locked.*AGENTMEM_DATABASE_URL"
    ):
        writer.run(embedded_batches(table, chunk_memories(table, embedder.tokenizer, 256), embedder))
    blocker.execute("ROLLBACK")
    blocker.close()


def versions(lance: LanceStore, libsql: LibsqlStore) -> tuple[list, list]:
    """Every row of DAY in both stores as (chunk id, ingest id)."""
    lance_rows = LanceStore._scan(lance.table(), ["chunk_id", "ingest_id"], f"day = '{DAY}'").to_pylist()
    with libsql.pool.connection() as conn:
        libsql_rows = conn.execute("SELECT chunk_id, ingest_id FROM chunks WHERE day = ?", [DAY]).fetchall()
    return sorted((r["chunk_id"], r["ingest_id"]) for r in lance_rows), sorted(map(tuple, libsql_rows))


def failing_at(batch_index: int, batches):
    """The batches, with a bad one at `batch_index` (vectors of another dimension, which
    LanceDB refuses for good)."""
    for batch in batches:
        if batch.index == batch_index:
            bad = batch.chunks.drop_columns(["vector"])
            flat = pa.array(np.zeros(bad.num_rows * 3, dtype=np.float32))
            bad = bad.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, 3))
            batch = Batch(batch.index, batch.memories, bad)
        yield batch


def test_a_failed_batch_leaves_both_stores_as_they_were_and_a_rerun_converges(stores, embedder):
    lance, libsql = stores
    old = memories(30, prefix="old")
    ingest(old, embedder=embedder, lance=lance, libsql=libsql, days=[DAY], ingest_id="run1", batch_chunks=8)
    before = versions(lance, libsql)
    assert len(before[0]) == 30 and before[0] == before[1]

    new = memories(40, prefix="new")  # new ids, and 10 more of them than before
    batches = embedded_batches(new, chunk_memories(new, embedder.tokenizer, 256), embedder, batch_chunks=8)
    writer = FanOutWriter([LanceSink(lance, [DAY], "run2"), LibsqlSink(libsql, [DAY], "run2")])
    with pytest.raises(WriteError, match="batch 2 to lancedb"):
        writer.run(failing_at(2, batches))
    # batches 0 and 1 reached both stores, LibSQL wrote 2 as well: all taken out again
    assert versions(lance, libsql) == before
    assert libsql.counts([DAY])["memories"] == 30

    ingest(new, embedder=embedder, lance=lance, libsql=libsql, days=[DAY], batch_chunks=8)
    lance_ids, libsql_ids = ids(lance, libsql)
    assert lance_ids == libsql_ids == sorted(f"new{i}#0" for i in range(40))
    assert libsql.counts([DAY])["memories"] == 40


@pytest.mark.parametrize("libsql_delay", [0.15, 0.0], ids=["still-writing", "already-done"])
def test_when_one_store_of_a_run_fails_the_other_keeps_none_of_its_rows(stores, embedder, libsql_delay):
    """The Dagster writer ops: each writes one store. The one that fails records it and takes
    the run's rows out of both stores; the other, if still writing, stops at its next batch.
    Either way neither store keeps a row of the run."""
    lance, libsql = stores
    ingest(memories(30, prefix="old"), embedder=embedder, lance=lance, libsql=libsql, days=[DAY], ingest_id="run1")
    libsql.replace_quarantine([DAY], [bad_line("old.jsonl")])
    before = versions(lance, libsql), libsql.quarantine([DAY])
    new = memories(60, prefix="new")
    chunks = chunk_memories(new, embedder.tokenizer, 256)
    run_sinks = [LanceSink(lance, [DAY], "run2"), LibsqlSink(libsql, [DAY], "run2")]
    libsql.stage_quarantine([DAY], [bad_line("new.jsonl"), bad_line("new.jsonl", 2)], "run2")  # as raw_memories does
    errors, log = {}, []

    def part(index: int, batches, delay: float) -> None:
        sink = Recording(run_sinks[index], log, delay)
        try:
            write_one_store(sink, run_sinks, batches, libsql=libsql, ingest_id="run2")
        except WriteError as exc:
            errors[sink.name] = str(exc)

    lance_batches = failing_at(3, embedded_batches(new, chunks, embedder, batch_chunks=6))
    lance_part = threading.Thread(target=part, args=(0, lance_batches, 0.1))
    libsql_part = threading.Thread(target=part, args=(1, embedded_batches(new, chunks, embedder, batch_chunks=6), libsql_delay))
    for thread in (lance_part, libsql_part):
        thread.start()
    for thread in (lance_part, libsql_part):
        thread.join()

    assert "batch 3 to lancedb" in errors["lancedb"]
    written = {index for name, event, index, _ in log if name == "libsql" and event == "end"}
    if libsql_delay:
        assert errors["libsql"].startswith("stopped, the run failed elsewhere: writing lancedb failed")
        assert 0 < len(written) < 10
    else:  # it had finished all its batches before the failure
        assert "libsql" not in errors and len(written) == 10
    assert (versions(lance, libsql), libsql.quarantine([DAY])) == before  # the quarantine too
    assert libsql.failure("run2").startswith("writing lancedb failed")


def bad_line(file: str, line: int = 1) -> QuarantineRecord:
    return QuarantineRecord(DAY, f"{DAY}/{file}", line, "not json", "invalid_json: Expecting value")


def test_a_days_quarantine_changes_only_when_the_run_commits(stores, embedder):
    lance, libsql = stores
    libsql.replace_quarantine([DAY], [bad_line("old.jsonl")])
    old = libsql.quarantine([DAY])
    libsql.stage_quarantine([DAY], [bad_line("new.jsonl")], "run2")
    assert libsql.quarantine([DAY]) == old  # staged, not yet the day's
    writer = FanOutWriter([LanceSink(lance, [DAY], "run2"), LibsqlSink(libsql, [DAY], "run2")])
    writer.run(embedded_batches(memories(5), chunk_memories(memories(5), embedder.tokenizer, 256), embedder))
    assert [row["file"] for row in libsql.quarantine([DAY])] == [f"{DAY}/new.jsonl"]
    # a run that staged an empty quarantine clears the day's; one that staged none keeps it
    libsql.stage_quarantine([DAY], [], "run3")
    FanOutWriter([LibsqlSink(libsql, [DAY], "run3")]).run(iter([]))
    assert libsql.quarantine([DAY]) == []
    libsql.replace_quarantine([DAY], [bad_line("kept.jsonl")])
    FanOutWriter([LibsqlSink(libsql, [DAY], "run4")]).run(iter([]))
    assert [row["file"] for row in libsql.quarantine([DAY])] == [f"{DAY}/kept.jsonl"]
    with libsql.pool.connection() as conn:  # nothing staged is left behind by committed runs
        assert conn.execute("SELECT count(*) FROM quarantine_staged").fetchone()[0] == 0


def test_reingesting_unchanged_memories_embeds_nothing(stores, embedder):
    lance, libsql = stores
    table = memories(40)
    ingest(table, embedder=embedder, lance=lance, libsql=libsql, days=[DAY])
    calls = []
    original = embedder.embed
    embedder.embed = lambda texts, progress=None: calls.append(len(texts)) or original(texts, progress)
    try:
        ingest(table, embedder=embedder, lance=lance, libsql=libsql, days=[DAY])
    finally:
        embedder.embed = original
    assert calls == []
    lance_ids, libsql_ids = ids(lance, libsql)
    assert lance_ids == libsql_ids and len(lance_ids) == 40


def _run_same_day_twice(stores, embedder, use_lease: bool) -> tuple[list, list]:
    """Two ingestions of DAY with different memories, in two threads, their writes interleaved."""
    from agentmem_dagster.engine.writer import DayLease

    lance, libsql = stores
    errors = []
    both_begun = threading.Barrier(2)  # without the lease: each run notes the day's versions before either writes

    class BeginTogether(Recording):
        def begin(self):
            super().begin()
            both_begun.wait(timeout=30)

    def one(prefix: str, start_delay: float):
        time.sleep(start_delay)
        table = memories(20, prefix=prefix)
        log = []
        last = Recording if use_lease else BeginTogether  # sinks begin in order
        sinks = [Recording(LanceSink(lance, [DAY], prefix), log, 0.1), last(LibsqlSink(libsql, [DAY], prefix), log, 0.1)]
        lease = DayLease(libsql, [DAY], prefix, f"{prefix}:both") if use_lease else None
        try:
            FanOutWriter(sinks, lease=lease).run(
                embedded_batches(table, chunk_memories(table, embedder.tokenizer, 256), embedder, batch_chunks=5)
            )
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=("a", 0.0)), threading.Thread(target=one, args=("b", 0.15))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return ids(lance, libsql)


def test_two_runs_of_the_same_day_at_once_end_with_one_runs_rows(stores, embedder):
    lance_ids, libsql_ids = _run_same_day_twice(stores, embedder, use_lease=True)
    assert lance_ids == libsql_ids
    assert lance_ids in ([f"a{i}#0" for i in sorted(range(20), key=str)], [f"b{i}#0" for i in sorted(range(20), key=str)])


def test_without_the_lease_the_same_race_keeps_both_runs_rows(stores, embedder):
    """Why the lease exists: unserialised, neither run knew of the other's version when it
    began, so neither drops it and the day holds both (a run only drops versions it saw, so
    rows are never lost)."""
    lance_ids, libsql_ids = _run_same_day_twice(stores, embedder, use_lease=False)
    assert len(lance_ids) == len(libsql_ids) == 40


def test_threads_of_one_process_take_turns_instead_of_deadlocking(tmp_path):
    """The libsql binding keeps the GIL while SQLite's busy handler waits: a second writer
    thread waiting there would freeze the first inside its transaction until the busy
    timeout, then fail with "database is locked". The pool makes them take turns."""
    pool = LibsqlPool(str(tmp_path / "m.db"), size=2, busy_timeout_ms=3000)
    LibsqlStore(pool)  # creates the schema
    errors, inside = [], threading.Event()

    def slow_writer():
        with pool.transaction() as conn:
            inside.set()
            time.sleep(0.5)  # Python work inside the transaction needs the GIL to go on
            conn.execute("INSERT INTO embedding_cache VALUES ('m', 'slow', x'00')")

    def second_writer():
        inside.wait()
        try:
            with pool.transaction() as conn:
                conn.execute("INSERT INTO embedding_cache VALUES ('m', 'second', x'00')")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=slow_writer), threading.Thread(target=second_writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and time.perf_counter() - started < 2.5
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM embedding_cache").fetchone()[0] == 2
    pool.close()


def test_concurrent_writers_and_a_compaction_on_one_lancedb_table_conflict_and_are_retried(lance_uri, embedder):
    """Four runs replace their day in one LanceDB table at once (merge_insert batches, then
    delete of the old rows) while the table is compacted. LanceDB 0.40 resolves the conflicts of
    merge_insert, add and delete itself (here the writers never saw one); those it hands back,
    here to the compaction ("Retryable commit conflict for version N: This Rewrite transaction
    was preempted by concurrent transaction Delete ... Please retry."), RetryPolicy recognises
    and retries. Nothing surfaces, and every row is present once. The same on a local
    directory and in object storage (SeaweedFS)."""
    uri = lance_uri
    days = [f"2024-06-0{i}" for i in range(1, 5)]
    new = {day: memories(60, prefix=f"new-{day}-", day=day) for day in days}
    embedded = {day: with_vectors(c, embedder.embed(c["text"].to_pylist()))
                for day, c in ((d, chunk_memories(t, embedder.tokenizer, 256)) for d, t in new.items())}
    for day in days:  # each day holds an earlier run's rows, so each run ends with a delete
        old = memories(30, prefix=f"old-{day}-", day=day)
        chunks = chunk_memories(old, embedder.tokenizer, 256)
        LanceStore(uri).write(with_vectors(chunks, embedder.embed(chunks["text"].to_pylist())), "old")

    errors, writer_retries, compaction_retries = [], [], []
    writing = threading.Barrier(len(days) + 1)

    def write(day: str) -> None:
        writing.wait()
        for run in range(10):  # the day replaced again until a conflict was seen (twice at least)
            if run >= 2 and compaction_retries:
                break
            writer = FanOutWriter([LanceSink(LanceStore(uri), [day], f"run{run}-{day}")],
                                  retry=RetryPolicy(attempts=10), on_retry=writer_retries.append)
            try:
                writer.run(batches_from_embedded(new[day], embedded[day], batch_chunks=6))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(day,)) for day in days]
    for thread in threads:
        thread.start()
    store, policy = LanceStore(uri), RetryPolicy(attempts=100, base_delay=0.01, max_delay=0.05)
    writing.wait()
    while any(thread.is_alive() for thread in threads):
        policy.call(lambda: store.table().optimize(), "compacting", compaction_retries.append)
    for thread in threads:
        thread.join()

    assert errors == []
    assert compaction_retries, "no commit conflict happened: the test proves nothing"
    retried = compaction_retries + writer_retries  # the writers' own, should LanceDB hand one back
    assert all("commit conflict" in message.lower() for message in retried), retried[:3]
    for day in days:
        ids = LanceStore(uri).chunk_ids([day])
        assert sorted(ids) == sorted(embedded[day]["chunk_id"].to_pylist())  # each new row once, no old row


def test_generate_series_is_detected_and_other_errors_are_not_taken_for_its_absence(tmp_path):
    import sqlite3

    import libsql

    assert libsql_store.has_generate_series(libsql.connect(str(tmp_path / "a.db"), isolation_level=None))
    plain = sqlite3.connect(":memory:")  # Python's own SQLite is built without it
    assert not libsql_store.has_generate_series(plain)
    plain.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        libsql_store.has_generate_series(plain)
