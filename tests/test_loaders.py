"""Tests for training.loaders: batch exports read, validated and normalised column by column."""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from training.loaders import (
    EVENTS_SCHEMA,
    ITEMS_SCHEMA,
    BadFileError,
    LoadReport,
    event_files,
    load_customers,
    load_events,
    load_items,
)

# The columns of an events file: recorded_at is the loaders' reading of the exporter's stream_id.
COLUMNS = [name for name in EVENTS_SCHEMA.names if name != "recorded_at"]
GOOD = {
    "customer_id": "c1",
    "item_id": "i1",
    "event_type": "purchase",
    "channel": "store",
    "timestamp": "2020-01-01T10:00:00Z",
    "quantity": "2",
    "price": "9.5",
    "store_id": "s1",
    "session_id": "",
    "request_id": "",
    "rating": "",
    # No event_id: rows built from GOOD are distinct events (an event_id is loaded once).
    "event_id": "",
}
SAMPLE = [
    GOOD,
    {**GOOD, "customer_id": "c2", "item_id": "", "event_type": "email_open", "channel": "email"},
    {**GOOD, "customer_id": "c3", "event_type": "rating", "channel": "web", "rating": "4.5"},
]
FIRST = {
    "customer_id": "c1",
    "item_id": "i1",
    "event_type": "purchase",
    "channel": "store",
    "timestamp": datetime(2020, 1, 1, 10, tzinfo=UTC),
    "quantity": 2.0,
    "price": 9.5,
    "store_id": "s1",
    "session_id": None,
    "request_id": None,
    "rating": None,
    "event_id": None,
    "recorded_at": None,
}
EXPECTED = [
    FIRST,
    {**FIRST, "customer_id": "c2", "item_id": None, "event_type": "email_open", "channel": "email"},
    {**FIRST, "customer_id": "c3", "event_type": "rating", "channel": "web", "rating": 4.5},
]


def csv_text(rows: list[dict[str, str]], columns: list[str] | None = None) -> str:
    """CSV text with a header, quoted where csv.writer needs it."""
    columns = columns or (list(rows[0]) if rows else COLUMNS)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[name] for name in columns] for row in rows)
    return out.getvalue()


def write(path: Path, text: str) -> Path:
    """Writes text, gzipped when the name ends in .gz."""
    data = text.encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load_one(path: Path, **options: object) -> tuple[pa.Table, LoadReport]:
    table, reports = load_events([path], **options)
    assert len(reports) == 1
    return table, reports[0]


# --- Formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["events.csv", "events.csv.gz"])
def test_csv_loads_to_the_normalised_table(tmp_path: Path, name: str) -> None:
    table, report = load_one(write(tmp_path / name, csv_text(SAMPLE)))

    assert table.schema == EVENTS_SCHEMA
    assert table.to_pylist() == EXPECTED
    assert report == LoadReport(str(tmp_path / name), 3, 3, 0, [])


def test_parquet_with_string_columns_loads_like_csv(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "events.parquet", SAMPLE)

    table, report = load_one(path)

    assert table.schema == EVENTS_SCHEMA
    assert table.to_pylist() == EXPECTED
    assert report.bad_rows == 0


def test_parquet_with_typed_columns_loads_like_csv(tmp_path: Path) -> None:
    rows = [
        {
            **row,
            "timestamp": datetime(2020, 1, 1, 10),  # Naive: taken as UTC.
            "quantity": 2,
            "price": 9.5,
            "rating": float(row["rating"]) if row["rating"] else None,
            "item_id": row["item_id"] or None,
        }
        for row in SAMPLE
    ]

    table, _ = load_one(write_parquet(tmp_path / "events.parquet", rows))

    assert table.to_pylist() == EXPECTED


def test_missing_optional_columns_are_null_and_quantity_is_one(tmp_path: Path) -> None:
    columns = ["customer_id", "item_id", "event_type", "channel", "timestamp"]
    path = write(tmp_path / "events.csv", csv_text([GOOD], columns))

    table, _ = load_one(path)

    row = table.to_pylist()[0]
    assert row["quantity"] == 1.0
    assert [row[name] for name in ("price", "store_id", "rating", "event_id")] == [None] * 4


def test_empty_quantity_is_one(tmp_path: Path) -> None:
    table, report = load_one(write(tmp_path / "e.csv", csv_text([{**GOOD, "quantity": ""}])))

    assert table["quantity"].to_pylist() == [1.0]
    assert report.bad_rows == 0


def test_extra_columns_are_ignored(tmp_path: Path) -> None:
    rows = [{"basket_id": "b1", **GOOD, "week": "oops"}]
    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table.column_names == EVENTS_SCHEMA.names
    assert report.bad_rows == 0


def test_the_exporters_stream_id_is_read_as_the_time_the_event_was_recorded(
    tmp_path: Path,
) -> None:
    """Redis's milliseconds; not a stream id, or none: unknown (null), not a bad row."""
    ids = ["1767225600123-7", "x-1", ""]
    rows = [{**row, "stream_id": i} for row, i in zip(SAMPLE, ids, strict=True)]
    table, report = load_one(write_parquet(tmp_path / "part.parquet", rows))

    assert report.bad_rows == 0
    assert table["recorded_at"].to_pylist() == [
        datetime(2026, 1, 1, 0, 0, 0, 123000, tzinfo=UTC),
        None,
        None,
    ]


def test_header_only_file_loads_no_rows(tmp_path: Path) -> None:
    table, report = load_one(write(tmp_path / "e.csv", ",".join(COLUMNS) + "\n"))

    assert table.num_rows == 0
    assert table.schema == EVENTS_SCHEMA
    assert report == LoadReport(str(tmp_path / "e.csv"), 0, 0, 0, [])


def test_no_files_load_an_empty_table(tmp_path: Path) -> None:
    table, reports = load_events([tmp_path])

    assert table.schema == EVENTS_SCHEMA
    assert (table.num_rows, reports) == (0, [])


# --- Row validation --------------------------------------------------------------------------

RULES = [
    ({"customer_id": ""}, "customer_id is required"),
    ({"customer_id": "c" * 257}, "customer_id is 257 characters long, more than 256"),
    ({"customer_id": "c\x01"}, "customer_id 'c\\x01' contains a control character"),
    ({"item_id": "i\x7f"}, "item_id 'i\\x7f' contains a control character"),
    ({"item_id": "a\nb"}, "item_id 'a\\nb' contains a control character"),
    ({"store_id": "s\t"}, "store_id 's\\t' contains a control character"),
    ({"session_id": "x" * 300}, "session_id is 300 characters long"),
    ({"request_id": "\x00"}, "request_id '\\x00' contains a control character"),
    ({"event_id": "e\x1f"}, "event_id 'e\\x1f' contains a control character"),
    ({"event_type": "vieww"}, "event_type 'vieww' is not one of view, add_to_cart,"),
    ({"event_type": ""}, "event_type is required"),
    ({"channel": "fax"}, "channel 'fax' is not one of web, app, email, store,"),
    ({"channel": ""}, "channel is required"),
    ({"item_id": ""}, "item_id is required for event_type 'purchase'"),
    ({"item_id": "", "event_type": "view"}, "item_id is required for event_type 'view'"),
    ({"timestamp": "2020-13-01"}, "timestamp '2020-13-01' is not ISO-8601"),
    ({"timestamp": "2021-02-30T00:00:00Z"}, "timestamp '2021-02-30T00:00:00Z' is not ISO-8601"),
    ({"timestamp": "yesterday"}, "timestamp 'yesterday' is not ISO-8601"),
    ({"timestamp": "01/02/2020"}, "timestamp '01/02/2020' is not ISO-8601"),
    ({"timestamp": ""}, "timestamp is required"),
    (
        {"timestamp": "1969-12-31T23:59:59Z"},
        "timestamp '1969-12-31T23:59:59Z' is before 1970-01-01",
    ),
    ({"timestamp": "2999-01-01"}, "timestamp '2999-01-01' is more than 24 hours after now"),
    ({"quantity": "-2", "event_type": "view"}, "quantity -2 must be >= 0"),
    ({"quantity": "two"}, "quantity 'two' is not a number"),
    ({"quantity": "nan"}, "quantity 'nan' is not a number"),
    ({"price": "-1.5"}, "price -1.5 must be >= 0"),
    ({"price": "abc"}, "price 'abc' is not a number"),
    ({"rating": "x"}, "rating 'x' is not a number"),
]


@pytest.mark.parametrize(("change", "reason"), RULES)
def test_each_rule_reports_the_line_and_reason(
    tmp_path: Path, change: dict[str, str], reason: str
) -> None:
    rows = [GOOD, {**GOOD, **change}, {**GOOD, "customer_id": "c9"}]
    path = write(tmp_path / "events.csv", csv_text(rows))

    table, report = load_one(path)

    assert table["customer_id"].to_pylist() == ["c1", "c9"]
    assert (report.rows_read, report.rows_kept, report.bad_rows) == (3, 2, 1)
    [error] = report.errors
    assert (error.file, error.line) == (str(path), 3)
    assert error.reason.startswith(reason), error.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quantity": -2, "event_type": "add_to_cart"}, "quantity -2 must be >= 0"),
        ({"price": -0.5}, "price -0.5 must be >= 0"),
        ({"price": float("nan")}, "price nan is not a number"),
        ({"customer_id": ""}, "customer_id is required"),
        ({"timestamp": "2020-01-01T25:00:00Z"}, "timestamp '2020-01-01T25:00:00Z' is not"),
    ],
)
def test_parquet_rules_report_the_row_number(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    rows = [{**GOOD, "quantity": 1, "price": 1.0}] * 3
    rows[1] = {**rows[1], **change}

    table, report = load_one(write_parquet(tmp_path / "e.parquet", rows))

    assert table.num_rows == 2
    [error] = report.errors
    assert (error.file, error.line) == (str(tmp_path / "e.parquet"), 2)
    assert error.reason.startswith(reason), error.reason


def test_itemless_events_need_no_item(tmp_path: Path) -> None:
    rows = [{**GOOD, "event_type": kind, "item_id": ""} for kind in ("email_click", "email_open")]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert report.bad_rows == 0
    assert table["item_id"].to_pylist() == [None, None]


def test_every_problem_of_a_row_is_named(tmp_path: Path) -> None:
    bad = {**GOOD, "event_type": "view", "quantity": "-1", "price": "x", "channel": "fax"}

    _, report = load_one(write(tmp_path / "e.csv", csv_text([bad])))

    reason = report.errors[0].reason
    assert all(text in reason for text in ("channel 'fax'", "quantity -1", "price 'x'"))


# --- Modes and reports -----------------------------------------------------------------------


def mixed_file(tmp_path: Path) -> Path:
    """Five rows, three bad (lines 3, 4 and 6)."""
    rows = [
        GOOD,
        {**GOOD, "event_type": "vieww"},
        {**GOOD, "event_type": "view", "quantity": "-3"},
        GOOD,
        {**GOOD, "timestamp": "soon"},
    ]
    return write(tmp_path / "events.csv", csv_text(rows))


def test_skip_mode_drops_counts_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = mixed_file(tmp_path)

    with caplog.at_level(logging.WARNING, logger="training.loaders"):
        table, report = load_one(path)

    assert table.num_rows == 2
    assert (report.rows_read, report.rows_kept, report.bad_rows) == (5, 2, 3)
    assert [error.line for error in report.errors] == [3, 4, 6]
    [record] = caplog.records
    assert str(path) in record.getMessage()
    assert "3 bad row(s)" in record.getMessage()


def test_reject_mode_raises_with_the_report(tmp_path: Path) -> None:
    path = mixed_file(tmp_path)

    with pytest.raises(BadFileError, match="3 bad row") as caught:
        load_one(path, on_bad_rows="reject")

    assert caught.value.report.bad_rows == 3
    assert [error.line for error in caught.value.report.errors] == [3, 4, 6]
    assert f"{path}:4: quantity -3 must be >= 0" in str(caught.value)


def test_reject_mode_accepts_a_clean_file(tmp_path: Path) -> None:
    table, report = load_one(write(tmp_path / "e.csv", csv_text(SAMPLE)), on_bad_rows="reject")

    assert (table.num_rows, report.bad_rows) == (3, 0)


@pytest.mark.parametrize("options", [{"on_bad_rows": "drop"}, {"max_errors": -1}])
def test_unknown_options_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        load_one(write(tmp_path / "e.csv", csv_text(SAMPLE)), **options)


def test_max_errors_limits_the_list_not_the_count(tmp_path: Path) -> None:
    rows = [{**GOOD, "channel": "fax"}] * 30 + [GOOD]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)), max_errors=5)

    assert table.num_rows == 1
    assert report.bad_rows == 30
    assert [error.line for error in report.errors] == [2, 3, 4, 5, 6]


def test_wrong_field_counts_are_reported_at_their_physical_line(tmp_path: Path) -> None:
    good = ",".join(GOOD.values())
    lines = [
        ",".join(COLUMNS),
        good,  # 2
        "c1,i1,view",  # 3: too few
        "",  # 4: blank, skipped
        '"c\nd",i1,view,web,2020-01-01,1,1,,,,,',  # 5-6: one row over two lines
        good + ",extra",  # 7: too many
        good,  # 8
        "x,view,,oops",  # 9: too few, after the bad value on line 5
    ]
    path = write(tmp_path / "e.csv", "\n".join(lines) + "\n")

    table, report = load_one(path)

    assert table.num_rows == 2
    assert (report.rows_read, report.bad_rows) == (6, 4)
    assert [(e.line, e.reason) for e in report.errors] == [
        (3, "expected 12 fields, found 3"),
        (5, "customer_id 'c\\nd' contains a control character"),
        (7, "expected 12 fields, found 13"),
        (9, "expected 12 fields, found 4"),
    ]


# --- Unusable files --------------------------------------------------------------------------


@pytest.mark.parametrize("on_bad_rows", ["skip", "reject"])
@pytest.mark.parametrize(
    ("loader", "header", "missing"),
    [
        (load_one, "customer_id,item_id,event_type", "channel, timestamp"),
        (load_one, "item_id,event_type,channel,timestamp,price", "customer_id"),
        (load_items, "title,price", "item_id"),
        (load_customers, "id,age", "customer_id"),
    ],
)
def test_a_missing_required_column_makes_the_file_unusable(
    tmp_path: Path, loader: Callable[..., object], header: str, missing: str, on_bad_rows: str
) -> None:
    path = write(tmp_path / "file.csv", header + "\n1,2,3\n")

    with pytest.raises(BadFileError, match=f"file.csv: missing required column.*{missing}"):
        loader(path, on_bad_rows=on_bad_rows)


def truncated_gzip(path: Path) -> None:
    data = gzip.compress(csv_text([GOOD] * 2000).encode())
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("garbage.csv", lambda path: path.write_bytes(bytes(range(255, -1, -1)) * 20)),
        ("garbage.csv.gz", lambda path: path.write_bytes(b"\x1f\x8b not really gzip")),
        ("truncated.csv.gz", truncated_gzip),
        ("garbage.parquet", lambda path: path.write_bytes(b"PAR1 not really parquet PAR1")),
        ("csv-inside.parquet", lambda path: path.write_text(csv_text([GOOD]))),
        ("empty.csv", lambda path: path.write_bytes(b"")),
    ],
)
def test_an_unreadable_file_raises_bad_file_error(
    tmp_path: Path, name: str, make: Callable[[Path], object]
) -> None:
    path = tmp_path / name
    make(path)

    with pytest.raises(BadFileError, match=re.escape(name)) as caught:
        load_one(path)

    assert caught.value.report.file == str(path)


# --- Files and directories ---------------------------------------------------------------


def test_directories_expand_recursively_to_event_files(tmp_path: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    write(tmp_path / "b" / "deep" / "2.csv.gz", csv_text([{**GOOD, "customer_id": "c2"}]))
    write(tmp_path / "b" / "1.csv", csv_text([{**GOOD, "customer_id": "c1"}]))
    write_parquet(tmp_path / "a.parquet", [{**GOOD, "customer_id": "c0"}])
    write(tmp_path / "b" / "notes.txt", "not events")
    (tmp_path / "c.json").write_text("{}")

    files = event_files([tmp_path])
    table, reports = load_events([tmp_path])

    assert files == [tmp_path / "a.parquet", tmp_path / "b" / "1.csv", tmp_path / "b/deep/2.csv.gz"]
    assert [report.file for report in reports] == [str(path) for path in files]
    assert table["customer_id"].to_pylist() == ["c0", "c1", "c2"]


def test_a_file_given_twice_is_read_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write(data / "a.csv", csv_text([GOOD]))
    (tmp_path / "link.csv").symlink_to(data / "a.csv")
    given = [
        data,
        data / "a.csv",
        tmp_path / "data" / ".." / "data" / "a.csv",
        tmp_path / "link.csv",
    ]

    assert event_files(given) == [data / "a.csv"]
    assert load_events(given)[0].num_rows == 1


def test_a_missing_path_names_itself(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        event_files([tmp_path / "nowhere.csv"])
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        load_items(tmp_path / "nowhere.csv")


# --- Timestamps ------------------------------------------------------------------------------

TEN_UTC = datetime(2020, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-01T10:00:00Z", TEN_UTC),
        ("2020-01-01T12:00:00+02:00", TEN_UTC),
        ("2020-01-01T04:30:00-0530", TEN_UTC),
        ("2020-01-01 10:00:00Z", TEN_UTC),
        ("2020-01-01T10:00:00", TEN_UTC),
        ("2020-01-01 10:00:00", TEN_UTC),
        ("2020-01-01T10:00", TEN_UTC),
        ("2020-01-01", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01T10:00:00.123456789Z", TEN_UTC + timedelta(microseconds=123456)),
        ("2020-01-01T10:00:00.5", TEN_UTC + timedelta(milliseconds=500)),
    ],
)
def test_timestamps_are_normalised_to_utc(tmp_path: Path, text: str, expected: datetime) -> None:
    table, report = load_one(write(tmp_path / "e.csv", csv_text([{**GOOD, "timestamp": text}])))

    assert report.bad_rows == 0
    assert table["timestamp"].to_pylist() == [expected]


def test_zoned_and_naive_timestamps_mix_in_one_file(tmp_path: Path) -> None:
    stamps = ["2020-01-01T10:00:00Z", "2020-01-01 10:00:00", "2020-01-01T11:00:00+01", "bad"]
    rows = [{**GOOD, "timestamp": stamp} for stamp in stamps]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table["timestamp"].to_pylist() == [TEN_UTC] * 3
    assert [(e.line, e.reason) for e in report.errors] == [(5, "timestamp 'bad' is not ISO-8601")]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([datetime(2020, 1, 1, 10)], pa.timestamp("ns")),
        pa.array([datetime(2020, 1, 1, 10)], pa.timestamp("s")),
        pa.array([datetime(2020, 1, 1, 11, tzinfo=timezone(timedelta(hours=1)))]),
        pa.array([TEN_UTC], pa.timestamp("ms", tz="Europe/Paris")),
    ],
)
def test_parquet_timestamp_columns_become_utc(tmp_path: Path, column: pa.Array) -> None:
    rows = pa.Table.from_pylist([{**GOOD, "timestamp": None}]).drop_columns("timestamp")
    pq.write_table(rows.append_column("timestamp", column), tmp_path / "e.parquet")

    table, _ = load_one(tmp_path / "e.parquet")

    assert table["timestamp"].to_pylist() == [TEN_UTC]


def test_parquet_date_column_is_midnight_utc(tmp_path: Path) -> None:
    write_parquet(tmp_path / "e.parquet", [{**GOOD, "timestamp": date(2020, 1, 1)}])

    table, _ = load_one(tmp_path / "e.parquet")

    assert table["timestamp"].to_pylist() == [datetime(2020, 1, 1, tzinfo=UTC)]


# --- Items and customers ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["items.csv", "items.csv.gz", "items.parquet"])
def test_items_keep_the_first_of_duplicates(tmp_path: Path, name: str) -> None:
    rows = [
        {"item_id": "i1", "title": "Mug", "category": "kitchen", "price": "3.5", "colour": "red"},
        {"item_id": "i2", "title": "", "category": "garden", "price": "", "colour": ""},
        {"item_id": "i1", "title": "Mug again", "category": "x", "price": "1", "colour": ""},
        {"item_id": "i3", "title": "Bad", "category": "x", "price": "-1", "colour": ""},
    ]
    path = tmp_path / name
    write_parquet(path, rows) if name.endswith(".parquet") else write(path, csv_text(rows))
    line = 1 if name.endswith(".parquet") else 2  # Of the first row.

    table, report = load_items(path)

    assert table.schema == ITEMS_SCHEMA
    assert table.to_pylist() == [
        {"item_id": "i1", "title": "Mug", "category": "kitchen", "brand": None, "price": 3.5},
        {"item_id": "i2", "title": None, "category": "garden", "brand": None, "price": None},
    ]
    assert [(e.line, e.reason) for e in report.errors] == [
        (line + 2, "duplicate item_id 'i1': the first is kept"),
        (line + 3, "price -1 must be >= 0"),
    ]


def test_a_bad_first_item_does_not_shadow_a_good_repeat(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,price\ni1,-1\ni1,2\n")

    table, report = load_items(path)

    assert table.to_pylist() == [
        {"item_id": "i1", "title": None, "category": None, "brand": None, "price": 2.0}
    ]
    assert report.bad_rows == 1


def test_items_reject_mode_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,price\ni1,1\ni1,2\n")

    with pytest.raises(BadFileError, match=r"items.csv:3: duplicate item_id 'i1'"):
        load_items(path, on_bad_rows="reject")


@pytest.mark.parametrize("name", ["customers.csv.gz", "customers.parquet"])
def test_customers_keep_every_column_as_strings(tmp_path: Path, name: str) -> None:
    rows = [
        {"customer_id": "1", "age": 24, "country": "UK"},
        {"customer_id": "2", "age": None, "country": "FR"},
        {"customer_id": "1", "age": 99, "country": "DE"},
        {"customer_id": "x\x00", "age": 1, "country": "DE"},
    ]
    path = tmp_path / name
    line = 1 if name.endswith(".parquet") else 2  # Of the first row.
    if name.endswith(".parquet"):
        write_parquet(path, rows)
    else:
        texts = [{k: "" if v is None else str(v) for k, v in row.items()} for row in rows]
        write(path, csv_text(texts))

    table, report = load_customers(path)

    assert table.schema == pa.schema(
        [("customer_id", pa.string()), ("age", pa.string()), ("country", pa.string())]
    )
    assert table.to_pylist() == [
        {"customer_id": "1", "age": "24", "country": "UK"},
        {"customer_id": "2", "age": None, "country": "FR"},
    ]
    assert [(e.line, e.reason) for e in report.errors] == [
        (line + 2, "duplicate customer_id '1': the first is kept"),
        (line + 3, "customer_id 'x\\x00' contains a control character"),
    ]


# --- Real data -------------------------------------------------------------------------------

HM_EVENTS = Path("/work/shared/data/hm-fixture-day1/events.csv.gz")


@pytest.mark.slow
@pytest.mark.skipif(not HM_EVENTS.exists(), reason="shared H&M fixture not present")
def test_the_hm_fixture_loads_whole() -> None:
    table, [report] = load_events([HM_EVENTS], on_bad_rows="reject")

    assert table.num_rows == report.rows_kept == 9_996
    assert set(table["channel"].to_pylist()) == {"web", "store"}
    assert table.schema == EVENTS_SCHEMA


def test_parquet_float_ids_are_integers_and_their_nans_missing(tmp_path: Path) -> None:
    """pandas writes integer ids with gaps as float64 with NaN: a NaN is no id (a bad row where
    one is required), never the id "nan", and 87.0 is "87", as an int64 column gives."""
    nan = float("nan")
    rows = [
        {"customer_id": 87.0, "item_id": 3.0, "store_id": nan},
        {"customer_id": nan, "item_id": 4.0, "store_id": 2.0},
        {"customer_id": 88.0, "item_id": nan, "store_id": 2.5},
        {"customer_id": 89.0, "item_id": 10.0, "store_id": float("inf")},
    ]
    common = {"event_type": "purchase", "channel": "store", "timestamp": "2020-01-01"}
    path = write_parquet(tmp_path / "e.parquet", [{**common, **r} for r in rows])

    table, report = load_one(path)

    assert table["customer_id"].to_pylist() == ["87", "89"]
    assert table["item_id"].to_pylist() == ["3", "10"]
    assert table["store_id"].to_pylist() == [None, None]
    assert [(e.line, e.reason) for e in report.errors] == [
        (2, "customer_id is required"),
        (3, "item_id is required for event_type 'purchase'"),
    ]
    ints = write_parquet(tmp_path / "i.parquet", [{**common, "customer_id": 87, "item_id": 3}])
    assert load_one(ints)[0]["customer_id"].to_pylist() == ["87"]


@pytest.mark.parametrize("mode", ["skip", "reject"])
def test_an_unterminated_quote_that_leaves_too_few_fields_refuses_the_file(
    tmp_path: Path, mode: str
) -> None:
    """A quote opened early in a row, never closed: the rest of the file is one field of a row
    with too few fields (a malformed row), still not one bad row but the file refused."""
    lines = csv_text([{**GOOD, "event_id": f"e{n}"} for n in range(10)]).splitlines()
    lines[4] = lines[4].replace("c1,i1,", 'c1,"i1,', 1)  # data row 4 is line 5
    path = write(tmp_path / "events.csv", "\n".join(lines) + "\n")
    with pytest.raises(BadFileError, match=r"line 5: a row runs over 7 lines"):
        load_one(path, on_bad_rows=mode)


@pytest.mark.parametrize("mode", ["skip", "reject"])
def test_an_unterminated_quote_refuses_the_file_naming_its_line(tmp_path: Path, mode: str) -> None:
    """A stray quote swallows every line up to the next quote into one field: not one bad row
    but the rest of the file, so the file is refused with the line the quote opens on."""
    lines = csv_text([{**GOOD, "event_id": f"e{n}"} for n in range(10)]).splitlines()
    lines[4] = lines[4].replace(",e3", ',"e3')  # data row 4 is line 5
    path = write(tmp_path / "events.csv", "\n".join(lines) + "\n")
    with pytest.raises(BadFileError, match=r"line 5: a quoted field runs over 7 lines, to line 11"):
        load_one(path, on_bad_rows=mode)
