"""Event files as retailers' warehouses and scripts really export them: header spellings, files
whose compression or format their name does not say, other separators, nulls spelt out."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.test_loaders import COLUMNS, EXPECTED, GOOD, SAMPLE, csv_text, load_one, write
from training.loaders import BadFileError, load_customers, load_events, load_items


@pytest.mark.parametrize(
    "rename",
    [str.upper, str.title, lambda name: f" {name} ", lambda name: name.replace("_", " ")],
    ids=["upper", "title", "spaces", "words"],
)
def test_headers_match_whatever_their_case_and_spacing(tmp_path: Path, rename: object) -> None:
    text = csv_text(SAMPLE)
    header, rest = text.split("\n", 1)
    header = ",".join(rename(name) for name in header.split(","))  # type: ignore[operator]

    table, report = load_one(write(tmp_path / "e.csv", f"{header}\n{rest}"))

    assert table.to_pylist() == EXPECTED
    assert report.bad_rows == 0


def test_parquet_headers_match_whatever_their_case(tmp_path: Path) -> None:
    rows = [{name.upper(): value for name, value in row.items()} for row in SAMPLE]
    path = tmp_path / "e.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    table, _ = load_one(path)

    assert table.to_pylist() == EXPECTED


def test_two_headers_naming_one_column_refuse_the_file(tmp_path: Path) -> None:
    text = csv_text([{**GOOD, "Customer_ID": "c2"}], [*COLUMNS, "Customer_ID"])

    with pytest.raises(BadFileError, match="columns 'customer_id' and 'Customer_ID' both name"):
        load_one(write(tmp_path / "e.csv", text))


def test_items_and_customers_headers_match_too(tmp_path: Path) -> None:
    items, _ = load_items(write(tmp_path / "items.csv", "\ufeffItem_ID,Title\ni1,Mug\n"))
    customers, _ = load_customers(write(tmp_path / "c.csv", "Customer ID,Loyalty Tier\nc1,gold\n"))

    assert items.select(["item_id", "title"]).to_pylist() == [{"item_id": "i1", "title": "Mug"}]
    # Attributes keep the retailer's own names.
    assert customers.to_pylist() == [{"customer_id": "c1", "Loyalty Tier": "gold"}]


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("gzipped-without-suffix.csv", lambda text: gzip.compress(text.encode())),
        ("plain-with-suffix.csv.gz", lambda text: text.encode()),
    ],
)
def test_compression_is_read_from_the_bytes_not_the_name(
    tmp_path: Path, name: str, make: object
) -> None:
    path = tmp_path / name
    path.write_bytes(make(csv_text(SAMPLE)))  # type: ignore[operator]

    table, report = load_one(path)

    assert table.to_pylist() == EXPECTED
    assert report.bad_rows == 0


def test_a_parquet_file_named_csv_is_read_as_parquet(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    pq.write_table(pa.Table.from_pylist(SAMPLE), path)

    table, report = load_one(path)

    assert table.to_pylist() == EXPECTED
    assert report.rows_read == 3


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolons"), ("\t", "tabs"), ("|", "pipes")])
def test_another_separator_is_refused_saying_so(tmp_path: Path, sep: str, name: str) -> None:
    text = csv_text(SAMPLE).replace(",", sep)

    with pytest.raises(BadFileError, match=f"e.csv: missing required.*separated by {name}\\?"):
        load_one(write(tmp_path / "e.csv", text))


def test_a_file_that_is_not_utf8_is_refused_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(csv_text([{**GOOD, "item_id": "café"}]).encode("latin-1"))

    with pytest.raises(BadFileError, match=r"e.csv: is not UTF-8 text \(byte 0xe9\)"):
        load_one(path)


@pytest.mark.parametrize("null", ["NULL", "null", "\\N", "None"])
def test_nulls_spelt_out_are_missing_values(tmp_path: Path, null: str) -> None:
    rows = [{**GOOD, "customer_id": null}, {**GOOD, "price": null, "store_id": null}]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    # A guest checkout is a bad row, not one customer called "NULL" who bought everything.
    assert (report.bad_rows, report.errors[0].reason) == (1, "customer_id is required")
    assert table.select(["price", "store_id"]).to_pylist() == [{"price": None, "store_id": None}]


def test_parquet_nulls_spelt_out_are_missing_values(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pq.write_table(pa.Table.from_pylist([{**GOOD, "customer_id": "None"}, GOOD]), path)

    table, report = load_one(path)

    assert report.bad_rows == 1
    assert table["customer_id"].to_pylist() == ["c1"]


def test_customer_attributes_keep_values_that_look_like_nulls(tmp_path: Path) -> None:
    customers, _ = load_customers(write(tmp_path / "c.csv", "customer_id,kids\nc1,None\n"))

    assert customers.to_pylist() == [{"customer_id": "c1", "kids": "None"}]


def test_event_types_and_channels_are_read_whatever_their_case(tmp_path: Path) -> None:
    rows = [{**GOOD, "event_type": "Purchase", "channel": " STORE "}, {**GOOD, "channel": "POS"}]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table.select(["event_type", "channel"]).to_pylist() == [
        {"event_type": "purchase", "channel": "store"}
    ]
    # A channel the contract does not know stays a bad row, named as the file wrote it.
    assert report.errors[0].reason.startswith("channel 'POS' is not one of")


# --- Times as warehouses write them ----------------------------------------------------------

TEN_UTC = datetime(2020, 1, 1, 10, tzinfo=UTC)
TEN_UNIX = 1577872800


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-01-01 10:00:00 UTC", TEN_UTC),  # BigQuery
        ("2020-01-01 10:00:00.000 +0000", TEN_UTC),  # Snowflake
        ("2020-01-01 12:00:00 +02:00", TEN_UTC),
        ("2020-01-01T10:00:00 GMT", TEN_UTC),
        (str(TEN_UNIX), TEN_UTC),
        (f"{TEN_UNIX}.25", TEN_UTC + timedelta(milliseconds=250)),
        (f"{TEN_UNIX}123", TEN_UTC + timedelta(milliseconds=123)),
        (f"{TEN_UNIX}123456", TEN_UTC + timedelta(microseconds=123456)),
        (f"{TEN_UNIX}123456789", TEN_UTC + timedelta(microseconds=123456)),
        ("883612800", datetime(1998, 1, 1, tzinfo=UTC)),  # 9 digits: MovieLens' 1990s
    ],
)
def test_warehouse_times_are_read(tmp_path: Path, text: str, expected: datetime) -> None:
    table, report = load_one(write(tmp_path / "e.csv", csv_text([{**GOOD, "timestamp": text}])))

    assert report.bad_rows == 0
    assert table["timestamp"].to_pylist() == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "20200101",  # a date written as a number, not a time in 1970
        "15778728000",  # 11 digits: seconds in 2470 or milliseconds in 1970
        "99999999999999999999",  # beyond int64
    ],
)
def test_numbers_that_are_no_unix_time_are_bad_rows(tmp_path: Path, text: str) -> None:
    rows = [{**GOOD, "timestamp": text}, {**GOOD, "timestamp": str(TEN_UNIX)}]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table["timestamp"].to_pylist() == [TEN_UTC]
    assert report.errors[0].reason == (
        f"timestamp {text!r} is not a Unix time in seconds, milliseconds, microseconds or "
        "nanoseconds (9-10, 12-13, 15-16 or 18-19 digits)"
    )


def test_iso_and_unix_times_mix_in_one_file(tmp_path: Path) -> None:
    rows = [
        {**GOOD, "timestamp": "2020-01-01T12:00:00+02:00"},
        {**GOOD, "timestamp": f"{TEN_UNIX}000"},
        {**GOOD, "timestamp": "yesterday"},
    ]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table["timestamp"].to_pylist() == [TEN_UTC, TEN_UTC]
    assert report.errors[0].reason == "timestamp 'yesterday' is not ISO-8601"


@pytest.mark.parametrize(
    "column",
    [
        pa.array([TEN_UNIX, TEN_UNIX * 1000, None, 20200101], pa.int64()),
        pa.array([TEN_UNIX, TEN_UNIX, None, -TEN_UNIX], pa.int32()),
        pa.array([TEN_UNIX * 1000.0, float(TEN_UNIX), float("nan"), 1e30], pa.float64()),
    ],
    ids=["int64", "int32", "float64"],
)
def test_parquet_number_columns_are_unix_times(tmp_path: Path, column: pa.Array) -> None:
    rows = pa.Table.from_pylist([GOOD] * 4).drop_columns(["timestamp"])
    path = tmp_path / "e.parquet"
    pq.write_table(rows.append_column("timestamp", column), path)

    table, report = load_one(path)

    assert table["timestamp"].to_pylist() == [TEN_UTC, TEN_UTC]
    assert [error.reason for error in report.errors] == [
        "timestamp is required",
        f"timestamp {column[3].as_py()} is not a Unix time in seconds, milliseconds, "
        "microseconds or nanoseconds (9-10, 12-13, 15-16 or 18-19 digits)",
    ]


# --- Returns ------------------------------------------------------------------------------------


def test_a_purchase_with_a_negative_quantity_is_a_return(tmp_path: Path) -> None:
    rows = [
        {**GOOD, "quantity": "-2", "price": "9.5"},  # a till's return line
        {**GOOD, "quantity": "-1", "price": "-9.5"},  # the refund negated too
        {**GOOD, "event_type": "return", "quantity": "-3", "price": "-1"},  # signed return
        {**GOOD, "quantity": "0"},
    ]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert report.bad_rows == 0
    assert table.select(["event_type", "quantity", "price"]).to_pylist() == [
        {"event_type": "return", "quantity": 2.0, "price": 9.5},
        {"event_type": "return", "quantity": 1.0, "price": 9.5},
        {"event_type": "return", "quantity": 3.0, "price": 1.0},
        {"event_type": "purchase", "quantity": 0.0, "price": 9.5},
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_type": "add_to_cart", "quantity": "-1"}, "quantity -1 must be >= 0"),
        ({"price": "-2"}, "price -2 must be >= 0"),  # a sale at a negative price
    ],
)
def test_other_negative_amounts_stay_bad_rows(
    tmp_path: Path, change: dict[str, str], reason: str
) -> None:
    _, report = load_one(write(tmp_path / "e.csv", csv_text([GOOD, {**GOOD, **change}])))

    assert [(error.line, error.reason) for error in report.errors] == [(3, reason)]


# --- Ids ------------------------------------------------------------------------------------


def test_csv_ids_written_as_floats_read_as_integers(tmp_path: Path) -> None:
    rows = [{**GOOD, "customer_id": "17850.0", "item_id": "00123"}, {**GOOD, "customer_id": "7.0"}]

    table, _ = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table["customer_id"].to_pylist() == ["17850", "7"]
    # Leading zeros are the id's own: only a column of floats loses its ".0".
    assert table["item_id"].to_pylist() == ["00123", "i1"]


def test_an_id_that_merely_ends_in_dot_zero_keeps_it(tmp_path: Path) -> None:
    rows = [{**GOOD, "item_id": "sku-2.0"}, {**GOOD, "item_id": "3.0"}]

    table, _ = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table["item_id"].to_pylist() == ["sku-2.0", "3.0"]


def test_an_event_id_is_loaded_once_across_files(tmp_path: Path) -> None:
    first = [{**GOOD, "event_id": "e1"}, {**GOOD, "event_id": "e2"}, {**GOOD, "event_id": "e1"}]
    again = [{**GOOD, "event_id": "e2"}, {**GOOD, "event_id": "e3"}, GOOD, GOOD]
    paths = [write(tmp_path / "a.csv", csv_text(first)), write(tmp_path / "b.csv", csv_text(again))]

    table, reports = load_events(paths)

    # Rows without an event_id are distinct events, as repeated till lines are.
    assert table["event_id"].to_pylist() == ["e1", "e2", "e3", None, None]
    assert [(r.rows_kept, r.bad_rows) for r in reports] == [(2, 1), (3, 1)]
    assert [(e.line, e.reason) for r in reports for e in r.errors] == [
        (4, "duplicate event_id 'e1': the first is kept"),
        (2, "duplicate event_id 'e2': the first is kept"),
    ]


def test_a_bad_row_does_not_claim_its_event_id(tmp_path: Path) -> None:
    rows = [{**GOOD, "event_id": "e1", "channel": "fax"}, {**GOOD, "event_id": "e1"}]

    table, report = load_one(write(tmp_path / "e.csv", csv_text(rows)))

    assert table["event_id"].to_pylist() == ["e1"]
    assert [e.line for e in report.errors] == [2]
