"""The embedded default's Dagster instance: asset events stored in batches, one transaction
each, read back as Dagster's own SQLite storage would give them."""

import os
import sqlite3

import dagster as dg

from agentmem_dagster.instance import BatchedSqliteEventLogStorage, write_instance_config

DAYS = [f"2024-05-{d:02d}" for d in range(1, 31)]
days = dg.DynamicPartitionsDefinition(name="days")


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def first(context: dg.AssetExecutionContext) -> None:
    return None


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), deps=[first])
def second(context: dg.AssetExecutionContext) -> None:
    return None


def _range_run(home, monkeypatch) -> tuple[int, dict]:
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    with dg.DagsterInstance.get() as instance:
        # the storage turns batches on itself, for the processes `agentmem` does not start (the UI, the daemon)
        assert isinstance(instance.event_log_storage, BatchedSqliteEventLogStorage)
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "100000"
        instance.add_dynamic_partitions("days", DAYS)
        tags = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}
        result = dg.materialize([first, second], instance=instance, tags=tags)
        assert result.success
        materialized = {key: instance.get_materialized_partitions(dg.AssetKey(key)) for key in ("first", "second")}
        records = instance.fetch_materializations(dg.AssetKey("second"), limit=100).records
        assert sorted(r.partition_key for r in records) == DAYS
        run_db = home / "history" / "runs" / f"{result.run_id}.db"
        with sqlite3.connect(run_db) as conn:
            stored = conn.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'").fetchone()[0]
    return stored, materialized


def test_a_range_run_stores_every_day_event_through_the_batched_storage(tmp_path, monkeypatch, capfd):
    home = tmp_path / "home"
    home.mkdir()
    write_instance_config(home)
    stored, materialized = _range_run(home, monkeypatch)
    # Dagster falls back to one event at a time when a batch fails, saying so on stderr
    assert "Exception while storing event batch" not in capfd.readouterr().err
    assert stored == 2 * len(DAYS)
    assert materialized == {"first": set(DAYS), "second": set(DAYS)}
    # the index shard holds them too: what the UI's asset pages read
    with sqlite3.connect(home / "history" / "runs" / "index.db") as conn:
        indexed = conn.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'").fetchone()[0]
        assert indexed == 2 * len(DAYS)


def test_a_dagster_home_keeps_its_own_dagster_yaml(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_instance_config(tmp_path)
    assert (tmp_path / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
