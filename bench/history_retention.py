"""Benchmark: prediction history in day partitions against the plain table it replaces.

Two fresh PostgreSQL databases next to DATABASE_URL (dropped at exit): one migrated to
``inference.0004`` (the plain table, as before partitioning), one fully migrated (partitioned by
day). Both are driven by the same code, ``inference.history``, in child processes.

Retention, ``--rounds`` alternating rounds (plain first in odd rounds, partitioned first in even
ones), medians:
  1. setup (not timed): ``--rows`` rows spread over one UTC day just past the retention, then
     ``--keep-rows`` of the next day (so the old day sits at the start of the plain table, as it
     does in a table that is appended to), then VACUUM ANALYZE, autovacuum off on these tables
     so it cannot run in the middle of a measurement;
  2. timed: ``history_cleanup`` (the hourly task's work): a DELETE on the plain table, dropping
     the day's partition on the partitioned one; then, on the plain table, the VACUUM that the
     space needs before it can be used again. Sizes (heap, TOAST and indexes) and WAL written
     are read before and after.
  The plain table here holds just over a day; in production it holds HISTORY_RETENTION_DAYS of
  them, and VACUUM reads every index whole, so these DELETE + VACUUM figures are its best case.

Recording, the same alternation: the buffered recorder's flush (``history.flush``: the orphan
check, the COPY text, one COPY per 1,000 rows, as the server's writer thread does) of
``--record-rows`` iris-sized records, and of records with a 256-float input (~5 KB of JSON),
into each table; then the COPY alone with the text made beforehand (PostgreSQL's share), with
one writer and with two at once (two API processes).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/history_retention.py [--rows 1000000] [--keep-rows 250000] [--rounds 3]

``--migrate-rows N`` also times migration 0005 over a plain table of N rows (one run, there is
nothing to alternate with).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PYTHON, ROOT, fresh_database, machine, manage  # noqa: E402

RETENTION_DAYS = 30
PAYLOADS = ("iris", "wide")


# --- the child: one measurement in a Django process on one database ----------------------------


def _child(mode: str, params: dict) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
    django.setup()
    return {"setup": _setup, "fill": _fill, "remove": _remove, "record": _record, "migrate": _migrate}[mode](**params)


TABLE_BYTES = (
    "SELECT (coalesce(sum(pg_total_relation_size(inhrelid)), 0)"
    " + pg_total_relation_size('inference_prediction'))::bigint "
    "FROM pg_inherits WHERE inhparent = 'inference_prediction'::regclass"
)


def _table_bytes(cursor) -> int:
    """Heap, TOAST and indexes of the table, or of all its partitions."""
    cursor.execute(TABLE_BYTES)
    return cursor.fetchone()[0]


def _wal(cursor) -> str:
    cursor.execute("SELECT pg_current_wal_lsn()::text")
    return cursor.fetchone()[0]


def _wal_since(cursor, lsn: str) -> int:
    cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", [lsn])
    return cursor.fetchone()[0]


def _setup() -> dict:
    from access.models import APIKey
    from inference import history_partitions
    from registry.models import MLModel

    model = MLModel.objects.create(name="iris", version="1.0.0")
    key, _ = APIKey.objects.create_key(name="bench", scopes=["predict"])
    return {"model": str(model.pk), "key": key.pk, "partitioned": history_partitions.is_partitioned()}


def _fill(*, day: str, rows: int, keep_rows: int, model: str, key: str) -> dict:
    from django.db import connection

    from inference import history_partitions

    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    if history_partitions.is_partitioned():
        history_partitions.partitions_create(now=start, days_ahead=1)
    insert = """
        INSERT INTO inference_prediction (id, model_id, model_name, model_version, api_key_id, user_id,
            input_data, input_truncated, output_data, warnings, cached, inference_time_ms, total_time_ms, created_at)
        SELECT gen_random_uuid(), %(model)s, 'iris', '1.0.0', %(key)s, NULL,
            jsonb_build_object('X', jsonb_build_array(jsonb_build_array(4.3 + (i %% 36) / 10.0, 3.0, 1.4, 0.2))),
            false,
            jsonb_build_object('label', jsonb_build_array(i %% 3),
                               'probabilities', jsonb_build_array(jsonb_build_array(0.91, 0.06, 0.03))),
            '[]'::jsonb, i %% 5 = 0, 0.02, 0.15,
            %(start)s::timestamptz + (i * interval '86399 seconds' / %(rows)s)
        FROM generate_series(0, %(rows)s - 1) AS i
    """
    with connection.cursor() as cursor:
        cursor.execute(insert, {"model": model, "key": key, "start": start, "rows": rows})
        cursor.execute(insert, {"model": model, "key": key, "start": start + timedelta(days=1), "rows": keep_rows})
        cursor.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'inference_prediction'::regclass"
        )
        tables = [row[0] for row in cursor.fetchall()] or ["inference_prediction"]
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        cursor.execute("VACUUM (ANALYZE) inference_prediction")
        return {"bytes": _table_bytes(cursor)}


def _remove(*, now: str) -> dict:
    from django.db import connection

    from inference.history import history_cleanup
    from inference.history_partitions import is_partitioned

    result = {}
    with connection.cursor() as cursor:
        result["bytes_before"] = _table_bytes(cursor)
        lsn = _wal(cursor)
        began = time.perf_counter()
        result["removed"] = history_cleanup(now=datetime.fromisoformat(now))
        result["remove_s"] = time.perf_counter() - began
        result["wal_remove"] = _wal_since(cursor, lsn)
        result["bytes_after_remove"] = _table_bytes(cursor)
        result["vacuum_s"] = 0.0
        result["wal_vacuum"] = 0
        if not is_partitioned():
            lsn = _wal(cursor)
            began = time.perf_counter()
            cursor.execute("VACUUM inference_prediction")
            result["vacuum_s"] = time.perf_counter() - began
            result["wal_vacuum"] = _wal_since(cursor, lsn)
        result["bytes_after"] = _table_bytes(cursor)
    return result


def _records(count: int, payload: str, model_id: str, key: str) -> list:
    from django.utils import timezone

    from core import ids
    from inference.history import HistoryRecord

    rows = []
    for index in range(count):
        if payload == "iris":
            features = [[4.3 + (index % 36) / 10, 3.0, 1.4, 0.2]]
        else:
            features = [[((index * 7 + j) % 997) / 997 for j in range(256)]]
        rows.append(
            HistoryRecord(
                id=ids.uuid7(),
                model_id=model_id,
                model_name=payload,
                model_version="1.0.0",
                api_key_id=key,
                user_id=None,
                input_data={"X": features},
                input_truncated=False,
                output_data={"label": [index % 3], "probabilities": [[0.91, 0.06, 0.03]]},
                warnings=[],
                cached=index % 5 == 0,
                inference_time_ms=0.02,
                total_time_ms=0.15,
                created_at=timezone.now(),
            )
        )
    return rows


def _wait_for_the_start() -> None:
    """Records are built: say so, and start when the parent says (every writer at once)."""
    from django.db import connection

    connection.ensure_connection()
    print("ready", flush=True)
    sys.stdin.readline()


def _record(*, rows: int, payload: str, model: str, key: str, copy_only: bool) -> dict:
    import uuid

    from django.db import connection, transaction

    from inference import history as recorder
    from inference.models import Prediction

    records = _records(rows, payload, uuid.UUID(model), key)
    if copy_only:
        # The COPY text made as the writer makes it (inference.history._write), before the clock.
        column_list = ", ".join(
            connection.ops.quote_name(Prediction._meta.get_field(name).column)
            for name in recorder.HistoryRecord._fields
        )
        payloads = [recorder.copy_text(records[offset : offset + 1000]) for offset in range(0, rows, 1000)]
        _wait_for_the_start()
        began, cpu = time.time(), time.process_time()
        for data in payloads:
            with (
                transaction.atomic(),
                connection.cursor() as cursor,
                cursor.cursor.copy(f"COPY inference_prediction ({column_list}) FROM STDIN") as copy,
            ):
                copy.write(data)
        written = rows
    else:
        for record in records:
            recorder.history.record(record)
        _wait_for_the_start()
        began, cpu = time.time(), time.process_time()
        written = recorder.history.flush()
    return {"rows": written, "began": began, "ended": time.time(), "cpu_s": time.process_time() - cpu}


def _migrate(*, forward: bool) -> dict:
    from django.core.management import call_command

    began = time.perf_counter()
    call_command("migrate", "inference", "0005" if forward else "0004", verbosity=0)
    return {"seconds": time.perf_counter() - began}


# --- the parent: databases, alternation, tables ------------------------------------------------


def run_child(env: dict, mode: str, **params) -> dict:
    done = subprocess.run(
        [PYTHON, __file__, "--child", mode, json.dumps(params)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"child {mode} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def truncate(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("TRUNCATE inference_prediction")


def record_round(side: dict, *, rows: int, payload: str, writers: int, copy_only: bool) -> tuple[float, float]:
    """Rows per second written by ``writers`` processes at once, from the start signal to the last
    end; and the table's bytes per row after (heap, TOAST and indexes)."""
    truncate(side["url"])
    params = {"rows": rows, "payload": payload, "model": side["model"], "key": side["key"], "copy_only": copy_only}
    children = [
        subprocess.Popen(
            [PYTHON, __file__, "--child", "record", json.dumps(params)],
            cwd=ROOT,
            env=side["env"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    for child in children:
        if child.stdout.readline().strip() != "ready":
            raise SystemExit(f"record child failed:\n{child.communicate()}")
    started = time.time()
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    results = []
    for child in children:
        out, err = child.communicate(timeout=1800)
        if child.returncode:
            raise SystemExit(f"record child failed:\n{out}\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(result["rows"] for result in results)
    if total != rows * writers:
        raise SystemExit(f"{total} rows written, {rows * writers} expected")
    return total / (max(result["ended"] for result in results) - started), table_bytes(side["url"]) / total


def table_bytes(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(TABLE_BYTES).fetchone()[0]


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the day removed")
    parser.add_argument("--keep-rows", type=int, default=250_000, help="rows of the next day, kept")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record-rows", type=int, default=100_000, help="records per writer and round")
    parser.add_argument("--migrate-rows", type=int, default=0, help="also time migration 0005 over this many rows")
    parser.add_argument("--skip-retention", action="store_true")
    parser.add_argument("--skip-record", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("params", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, json.loads(args.params))))
        return

    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (the bench makes two databases next to it)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    sides = {}
    for name, label in (("plain", "hist_plain"), ("partitioned", "hist_part")):
        env = dict(os.environ)
        env.update(
            DATABASE_URL=fresh_database(url, workdir, label),
            LOG_LEVEL="WARNING",
            HISTORY_RETENTION_DAYS=str(RETENTION_DAYS),
            HISTORY_FLUSH_INTERVAL_SECONDS="0",
            HISTORY_BUFFER_MAX="10000000",
            MODEL_STORAGE_PATH=str(workdir / "models"),
        )
        manage(env, "migrate", "--no-input")
        if name == "plain":
            manage(env, "migrate", "inference", "0004", "--no-input")
        sides[name] = {"env": env, "url": env["DATABASE_URL"], **run_child(env, "setup")}
    assert not sides["plain"]["partitioned"] and sides["partitioned"]["partitioned"]

    print(f"# history retention and recording, {machine()}, {datetime.now(UTC):%Y-%m-%d}")
    with __import__("psycopg").connect(url) as connection:
        print(connection.execute("SELECT version()").fetchone()[0].split(" on ")[0])
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=RETENTION_DAYS + 1)).date()

    def order(round_index: int) -> tuple[str, str]:
        return ("plain", "partitioned") if round_index % 2 == 0 else ("partitioned", "plain")

    if not args.skip_retention:
        removals: dict[str, list[dict]] = {"plain": [], "partitioned": []}
        for round_index in range(args.rounds):
            for name in order(round_index):
                side = sides[name]
                truncate(side["url"])
                filled = run_child(
                    side["env"],
                    "fill",
                    day=old_day.isoformat(),
                    rows=args.rows,
                    keep_rows=args.keep_rows,
                    model=side["model"],
                    key=side["key"],
                )
                outcome = run_child(side["env"], "remove", now=now.isoformat())
                # Exact where deleted; a dropped partition's rows are PostgreSQL's estimate.
                if abs(outcome["removed"] - args.rows) > args.rows // 100:
                    raise SystemExit(f"{name}: {outcome['removed']} rows removed, {args.rows} expected")
                outcome["bytes_filled"] = filled["bytes"]
                removals[name].append(outcome)
                print(
                    f"round {round_index + 1} {name}: remove {outcome['remove_s']:.3f} s + vacuum "
                    f"{outcome['vacuum_s']:.3f} s; {mib(outcome['bytes_before'])} -> {mib(outcome['bytes_after'])}",
                    flush=True,
                )
        print(f"\nRemoving one day of {args.rows:,} rows ({args.keep_rows:,} rows of the next day kept), medians of")
        print(f"{args.rounds} alternating rounds:\n")
        print(
            "| table | remove (s) | VACUUM (s) | total (s) | size before | after remove | after VACUUM | WAL written |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, outcomes in removals.items():

            def median(key: str, outcomes=outcomes) -> float:
                return statistics.median(outcome[key] for outcome in outcomes)

            total = statistics.median(outcome["remove_s"] + outcome["vacuum_s"] for outcome in outcomes)
            wal = statistics.median(outcome["wal_remove"] + outcome["wal_vacuum"] for outcome in outcomes)
            print(
                f"| {name} | {median('remove_s'):.3f} | {median('vacuum_s'):.3f} | {total:.3f} | "
                f"{mib(median('bytes_before'))} | {mib(median('bytes_after_remove'))} | {mib(median('bytes_after'))} "
                f"| {mib(wal)} |"
            )
            rounds = ", ".join(f"{o['remove_s'] + o['vacuum_s']:.3f}" for o in outcomes)
            print(f"  {name} rounds (s): {rounds}")
        for side in sides.values():
            truncate(side["url"])

    if not args.skip_record:
        cases = [(payload, 1, False) for payload in PAYLOADS] + [
            (payload, w, True) for payload in PAYLOADS for w in (1, 2)
        ]
        rates: dict[tuple, dict[str, list[float]]] = {case: {"plain": [], "partitioned": []} for case in cases}
        sizes: dict[tuple, list[float]] = {(payload, name): [] for payload in PAYLOADS for name in sides}
        for round_index in range(args.rounds):
            for case in cases:
                payload, writers, copy_only = case
                for name in order(round_index):
                    rate, row_bytes = record_round(
                        sides[name], rows=args.record_rows, payload=payload, writers=writers, copy_only=copy_only
                    )
                    rates[case][name].append(rate)
                    sizes[(payload, name)].append(row_bytes)
                    label = f"{payload} x{writers}{' COPY only' if copy_only else ''}"
                    print(f"round {round_index + 1} {label} {name}: {rate:,.0f} rows/s", flush=True)
        print(
            f"\nRecording {args.record_rows:,} records per writer, rows/s, medians of {args.rounds} alternating "
            "rounds:\n"
        )
        print("| what is timed | input | writers | plain | partitioned | partitioned / plain |")
        print("|---|---|---|---|---|---|")
        for case, by_side in rates.items():
            payload, writers, copy_only = case
            plain, partitioned = (statistics.median(by_side[name]) for name in ("plain", "partitioned"))
            what = "COPY only (text made before)" if copy_only else "history.flush (the writer thread's work)"
            print(
                f"| {what} | {payload} | {writers} | {plain:,.0f} | {partitioned:,.0f} | {partitioned / plain:.2f}x |"
            )
        print("\nBytes per row on disk (heap, TOAST and every index), medians:")
        for (payload, name), values in sizes.items():
            print(f"  {payload} {name}: {statistics.median(values):,.0f}")
        for side in sides.values():
            truncate(side["url"])

    if args.migrate_rows:
        plain = sides["plain"]
        today = now.date()
        run_child(
            plain["env"],
            "fill",
            day=(today - timedelta(days=1)).isoformat(),
            rows=args.migrate_rows // 2,
            keep_rows=args.migrate_rows - args.migrate_rows // 2,
            model=plain["model"],
            key=plain["key"],
        )
        forward = run_child(plain["env"], "migrate", forward=True)["seconds"]
        back = run_child(plain["env"], "migrate", forward=False)["seconds"]
        print(f"\nmigration 0005 over {args.migrate_rows:,} rows: {forward:.1f} s; its reverse {back:.1f} s")


if __name__ == "__main__":
    main()
