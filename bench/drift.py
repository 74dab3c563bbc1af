"""Benchmark: one window's drift over a million recorded predictions, in bounded memory.

A fresh PostgreSQL database next to DATABASE_URL (dropped at exit), fully migrated (the
history partitioned by day). A ready iris-shaped version (input X [-1, 4], outputs label and
probabilities [-1, 3]) gets a reference summarised from 2,000 iris-like rows, and ``--rows``
recorded predictions of one row each are written in the last hour with generated values (one
INSERT ... SELECT in the database: the setup is not timed).

Timed, each in a new child process (so that its peak RSS is its own): ``monitoring.drift.compute``
over the 1h window, once reading every row (DRIFT_SAMPLE_ROWS=0) and once with the default
sample (DRIFT_SAMPLE_ROWS=100000). Reported: wall time, the child's CPU time (the worker's
share; PostgreSQL's is not in it), its peak RSS before the computation (Django and numpy
loaded) and after, and the level of feature X[0] (the rows are shifted on X[0], so it must be
red). Memory is flat when the RSS growth does not grow with ``--rows``: run it at two sizes.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/drift.py [--rows 1000000]

The issue's bar: 1,000,000 rows summarised in under a minute of one worker's time, memory flat.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PYTHON, ROOT, fresh_database, machine, manage  # noqa: E402

INPUT_SCHEMA = [{"name": "X", "datatype": "FP32", "onnx_type": "tensor(float)", "shape": [-1, 4], "kind": "tensor"}]
OUTPUT_SCHEMA = [
    {"name": "label", "datatype": "INT64", "onnx_type": "tensor(int64)", "shape": [-1], "kind": "tensor"},
    {"name": "probabilities", "datatype": "FP32", "onnx_type": "tensor(float)", "shape": [-1, 3], "kind": "tensor"},
]


def _setup(*, rows: int) -> dict:
    import numpy as np
    from django.db import connection
    from django.utils import timezone

    from inference import history_partitions
    from monitoring import reference
    from monitoring.models import Reference
    from registry import services
    from registry.demo import build_iris_onnx
    from registry.models import MLModel

    model = services.model_create(name="iris", version="1.0.0")
    model = services.model_upload(model=model, staged=services.stage_stream(io.BytesIO(build_iris_onnx())))
    # Ready without the sandboxed validation (not what is measured); the demo model's schemas.
    MLModel.objects.filter(pk=model.pk).update(
        status=MLModel.Status.READY, input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA
    )
    model.refresh_from_db()
    rng = np.random.default_rng(1)
    features = rng.normal([5.8, 3.0, 3.8, 1.2], [0.8, 0.4, 1.8, 0.8], (2000, 4))
    probabilities = rng.dirichlet([1, 1, 1], 2000)
    batches = {
        ("input", "X"): features,
        ("output", "label"): probabilities.argmax(axis=1),
        ("output", "probabilities"): probabilities,
    }
    plan = reference.plan_for(model)
    summary = reference.summarise(plan, [batches], rng)
    Reference.objects.create(model=model, source=Reference.Source.FILE, rows=summary["rows"], summary=summary)
    now = timezone.now()
    if history_partitions.is_partitioned():
        history_partitions.partitions_create(now=now)
    with connection.cursor() as cursor:
        # X[0] shifted by 3 of its standard deviations; the other features as in the reference.
        cursor.execute(
            """
            INSERT INTO inference_prediction (id, model_id, model_name, model_version, input_data, input_truncated,
                output_data, warnings, cached, inference_time_ms, total_time_ms, created_at)
            SELECT gen_random_uuid(), %(model)s, 'iris', '1.0.0',
                jsonb_build_object('X', jsonb_build_array(jsonb_build_array(
                    round((8.2 + random() * 0.8)::numeric, 2), round((2.6 + random() * 0.8)::numeric, 2),
                    round((1.0 + random() * 5.5)::numeric, 2), round((0.1 + random() * 2.3)::numeric, 2)))),
                false,
                jsonb_build_object('label', jsonb_build_array(i %% 3),
                    'probabilities', jsonb_build_array(jsonb_build_array(0.91, 0.06, 0.03))),
                '[]'::jsonb, false, 0.02, 0.15,
                %(now)s::timestamptz - (random() * interval '59 minutes')
            FROM generate_series(1, %(rows)s) AS i
            """,
            {"model": str(model.pk), "now": now, "rows": rows},
        )
        cursor.execute("ANALYZE inference_prediction")
    return {"model": str(model.pk), "now": now.isoformat()}


def _compute(*, model: str, now: str, sample_rows: int) -> dict:
    import resource
    import time
    from datetime import datetime

    from django.conf import settings

    from monitoring import drift
    from monitoring.models import Reference

    settings.DRIFT_SAMPLE_ROWS = sample_rows
    summary = Reference.objects.get(model_id=model).summary
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = drift.compute(
        model_id=model,
        summary=summary,
        window="1h",
        end=datetime.fromisoformat(now),
        thresholds=drift.thresholds_for("iris"),
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    feature_0 = next(feature for feature in result["features"] if feature["name"] == "X[0]")
    return {
        "predictions": result["predictions"],
        "rows_read": result["rows"],
        "wall_s": round(wall, 2),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2),
        "rss_before_mb": round(before.ru_maxrss / 1024, 1),
        "rss_peak_mb": round(after.ru_maxrss / 1024, 1),
        "x0_level": feature_0["level"],
        "x0_psi": round(feature_0["psi"], 3),
    }


def _child(mode: str, params: dict) -> dict:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelforge_site.settings")
    django.setup()
    return {"setup": _setup, "compute": _compute}[mode](**params)


def run_child(env: dict, mode: str, **params) -> dict:
    done = subprocess.run(
        [PYTHON, __file__, "--child", mode, json.dumps(params)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], json.loads(args.child[1]))))
        return
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server (a database next to it is created and dropped).")
    with tempfile.TemporaryDirectory() as workdir:
        env = dict(os.environ, LOG_LEVEL="WARNING", MODEL_STORAGE_PATH=str(Path(workdir) / "models"))
        env["DATABASE_URL"] = fresh_database(url, Path(workdir), "drift")
        manage(env, "migrate", "--no-input")
        setup = run_child(env, "setup", rows=args.rows)
        print(f"drift over one 1h window of {args.rows:,} recorded predictions; {machine()}")
        for sample_rows in (0, 100_000):
            measured = run_child(env, "compute", sample_rows=sample_rows, **setup)
            label = "every row" if not sample_rows else f"sample of ~{sample_rows:,}"
            print(
                f"{label:>20}: {measured['rows_read']:>9,} rows read in {measured['wall_s']:6.2f} s "
                f"(CPU {measured['cpu_s']:6.2f} s), RSS {measured['rss_before_mb']:.0f} -> "
                f"{measured['rss_peak_mb']:.0f} MB peak; X[0] {measured['x0_level']} (PSI {measured['x0_psi']})"
            )


if __name__ == "__main__":
    main()
