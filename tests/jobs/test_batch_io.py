"""Reading batch input files in chunks: rows, file lines and the first bad row named."""

from __future__ import annotations

import gc
import uuid

import numpy as np
import orjson
import pytest

from jobs import batch_io
from jobs.errors import BadRow
from jobs.storage import JobFiles
from tests.jobs.factories import iris_model, iris_rows, jsonl_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def iris(make_model):
    return make_model(iris_model())


def read_all(path, model, chunk_rows):
    with open(path, "rb") as source:
        chunks = list(batch_io.read_chunks(source, "jsonl", model, chunk_rows))
    return chunks, [batch_io.decode_chunk(chunk, model) for chunk in chunks]


def test_jsonl_chunks_hold_every_row_in_order(iris, tmp_path):
    rows = iris_rows(25)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(jsonl_bytes(rows))
    chunks, feeds = read_all(path, iris, chunk_rows=10)
    assert [(chunk.first_row, chunk.rows) for chunk in chunks] == [(1, 10), (11, 10), (21, 5)]
    np.testing.assert_array_equal(np.concatenate([feed["X"] for feed in feeds]), rows)


def test_blank_lines_are_skipped_and_rows_keep_their_file_lines(iris, tmp_path):
    lines = jsonl_bytes(iris_rows(6)).splitlines(keepends=True)
    # line 1: row 1, line 2 blank, lines 3-4: rows 2-3, lines 5-6 blank, lines 7-9: rows 4-6
    text = lines[0] + b"\n" + lines[1] + lines[2] + b"  \n\r\n" + b"".join(lines[3:])
    path = tmp_path / "rows.jsonl"
    path.write_bytes(text)
    chunks, feeds = read_all(path, iris, chunk_rows=3)
    assert [(chunk.first_row, chunk.rows, list(chunk.lines)) for chunk in chunks] == [
        (1, 2, [1, 3]),
        (3, 1, [4]),
        (4, 3, [7, 8, 9]),
    ]
    np.testing.assert_array_equal(np.concatenate([feed["X"] for feed in feeds]), iris_rows(6))


def test_a_chunk_of_blank_lines_only_yields_nothing(iris, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(jsonl_bytes(iris_rows(2)) + b"\n" * 5 + jsonl_bytes(iris_rows(1, seed=1)))
    chunks, _ = read_all(path, iris, chunk_rows=2)
    assert [(chunk.first_row, chunk.rows) for chunk in chunks] == [(1, 2), (3, 1)]
    assert list(chunks[1].lines) == [8]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b'{"X": [5.1, 3.5, 1.4, 0.2]} {"X": [1, 2, 3, 4]}\n', "Row 5 (line 6): "),
        (b"[5.1, 3.5, 1.4, 0.2]\n", "Row 5 (line 6): is not a JSON object"),
        (b'{"X": [5.1, 3.5, 1.4, 0.2], "Y": 1}\n', "Row 5 (line 6): unknown input(s) ['Y']"),
        (b"{}\n", "Row 5 (line 6): missing input(s) ['X']"),
        (b'{"X": [5.1, NaN, 1.4, 0.2]}\n', "Row 5 (line 6): "),
    ],
)
def test_the_first_bad_row_is_named_with_its_line(iris, tmp_path, bad_line, message):
    lines = jsonl_bytes(iris_rows(8)).splitlines(keepends=True)
    lines.insert(2, b"\n")  # rows and lines part from line 3 on
    lines[5] = bad_line  # line 6 = row 5
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(lines))
    with pytest.raises(BadRow) as caught:
        read_all(path, iris, chunk_rows=4)
    assert str(caught.value.detail).startswith(message)
    assert caught.value.row == 5


def test_values_nested_deeper_than_the_limit_fail_their_row(iris, tmp_path, settings):
    settings.MAX_JSON_DEPTH = 8
    lines = jsonl_bytes(iris_rows(4)).splitlines(keepends=True)
    lines[2] = b'{"X": ' + b"[" * 20 + b"1" + b"]" * 20 + b"}\n"
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(lines))
    with pytest.raises(BadRow) as caught:
        read_all(path, iris, chunk_rows=10)
    assert caught.value.row == 3
    assert caught.value.rule == "nesting_too_deep"


def test_the_collector_is_paused_for_batches_and_restored_after_the_last(settings):
    assert gc.isenabled()
    with batch_io.garbage_collection_paused():
        assert not gc.isenabled()
        with batch_io.garbage_collection_paused():  # a second job in another thread
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first one still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError), batch_io.garbage_collection_paused():
        raise RuntimeError("a failing batch")
    assert gc.isenabled()


def _per_row(names, columns) -> bytes:
    return b"".join(orjson.dumps(dict(zip(names, row, strict=True))) + b"\n" for row in zip(*columns, strict=True))


@pytest.mark.parametrize(
    "arrays",
    [
        {"label": np.array([0, 2, 1], dtype=np.int64), "probabilities": np.random.default_rng(0).random((3, 3))},
        {"variable": np.array([[1.5], [-2.0]], dtype=np.float32)},
        {"flags": np.array([True, False]), "counts": np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)},
        {"one": np.array([7.25])},
        {"empty_lists": np.zeros((2, 0), dtype=np.float32)},
    ],
    ids=["classifier", "regressor", "bool-and-uint8", "one-row", "empty-lists"],
)
def test_numeric_outputs_are_written_as_one_object_per_row(arrays):
    names, values = list(arrays), list(arrays.values())
    columns = [value.tolist() for value in values]
    columns[0] = [None if isinstance(item, float) and item != item else item for item in columns[0]]
    written = batch_io._numeric_lines(names, values, columns, len(values[0]))
    assert written == _per_row(names, columns)
    assert [orjson.loads(line) for line in written.splitlines()] == [
        dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)
    ]


def test_non_finite_values_rendered_as_null_stay_in_their_row():
    values = [np.array([[1.0, np.nan], [np.inf, 2.0]], dtype=np.float32)]
    columns = [[[1.0, None], [None, 2.0]]]
    assert batch_io._numeric_lines(["y"], values, columns, 2) == b'{"y":[1.0,null]}\n{"y":[null,2.0]}\n'


@pytest.mark.parametrize(
    "value, column",
    [
        (np.array(["setosa", "a,b"], dtype=object), ["setosa", "a,b"]),  # strings may hold the separators
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)).tolist()),  # deeper than a list per row
        ([{"0": 0.5}, {"0": 0.25}], [{"0": 0.5}, {"0": 0.25}]),  # ZipMap's maps
    ],
    ids=["strings", "three-dimensional", "maps"],
)
def test_other_outputs_are_left_to_the_per_row_writer(value, column):
    assert batch_io._numeric_lines(["out"], [value], [column], 2) is None


def test_the_output_file_holds_the_same_bytes_either_way(tmp_path):
    names = ["label", "scores"]
    values = [np.array([1, 0], dtype=np.int64), np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)]
    schema = [
        {"name": "label", "type": "tensor(int64)", "shape": ["N"]},
        {"name": "scores", "type": "tensor(float)", "shape": ["N", 2]},
    ]
    files = JobFiles(uuid.uuid4())
    writer = batch_io.OutputWriter(files.output_sink("output-1.jsonl"))
    writer.write(names, values, schema, rows=2)
    writer.commit()
    path = files.output_path("output-1.jsonl")
    assert [orjson.loads(line) for line in path.read_bytes().splitlines()] == [
        {"label": 1, "scores": [float(np.float32(0.1)), float(np.float32(0.9))]},
        {"label": 0, "scores": [float(np.float32(0.8)), float(np.float32(0.2))]},
    ]
