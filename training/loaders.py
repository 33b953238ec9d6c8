"""Loaders for batch exports of events, items and customers (CSV, gzipped CSV, Parquet).

Every file is read and validated column by column with pyarrow, so a 1.5M-row export loads in
seconds. The vocabulary (event types, channels, itemless events, id rules) comes from
``service.events``; a row that breaks it is never loaded silently: it is dropped and counted
(``on_bad_rows="skip"``) or the whole file is refused (``on_bad_rows="reject"``).
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Literal, get_args

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from service.events import (
    CHANNELS,
    CLOCK_SKEW,
    EARLIEST_EVENT_TIME,
    EVENT_TYPES,
    ITEMLESS_EVENT_TYPES,
    Id,
    NonNegative,
)
from training import iso_time, unix_time
from training.casts import as_mask, bisect, cast_to, shaped

log = logging.getLogger(__name__)

OnBadRows = Literal["skip", "reject"]

_UTC = unix_time.UTC_MICROS
EVENTS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("timestamp", _UTC, nullable=False),
        pa.field("quantity", pa.float64(), nullable=False),
        pa.field("price", pa.float64()),
        pa.field("store_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("rating", pa.float64()),
        pa.field("event_id", pa.string()),
        # When the service recorded the event, on Redis's clock: the time of the exporter's
        # stream entry id (``stream_id``); null for events from elsewhere. Erasure needs it
        # (training/suppression.py): a client's timestamp cannot tell an event sent after an
        # erasure from one sent before it.
        pa.field("recorded_at", _UTC),
    ]
)
# The columns read from an events file: the exporter's stream id stands for ``recorded_at``.
_EVENT_FILE_COLUMNS = (*(n for n in EVENTS_SCHEMA.names if n != "recorded_at"), "stream_id")
# A stream entry id: milliseconds on Redis's clock, then a sequence number.
_STREAM_ID = r"^\d{1,15}-\d+$"
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
    ]
)

# The id and amount rules are read off the contract's annotations, so they cannot drift from it.
_ID_RULES: msgspec.Meta = get_args(Id)[1]
# The Id rule for Arrow's regular expressions (RE2): there ``$`` is the end of the text, so the
# contract's look-ahead for Python's ``$`` (which also matches before a final newline), which
# RE2 cannot parse, is not needed.
_NO_CONTROL_CHARACTER = r"^[^\x00-\x1f\x7f]+$"
_MIN_AMOUNT: float = get_args(NonNegative)[1].ge
_ITEM_EVENT_TYPES = pa.array(sorted(set(EVENT_TYPES) - ITEMLESS_EVENT_TYPES))

# Shapes checked before casting (see training/casts.py).
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_EVENT_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
# Event times outside these bounds are bad rows, as the service's events API refuses them: a time
# further ahead than the clocks of tills and apps can drift is a broken clock or a typo, and one
# before 1970 a default value. Either would stretch the data window that the holdout divides.
EARLIEST = EARLIEST_EVENT_TIME
FUTURE_TOLERANCE = CLOCK_SKEW


class BadRow(msgspec.Struct, frozen=True):
    """One row that could not be loaded.

    ``line`` is the physical line in a CSV file (the header is line 1, the first data row line 2)
    or the 1-based row number in a Parquet file.
    """

    file: str
    line: int
    reason: str


class LoadReport(msgspec.Struct):
    """What loading one file did: ``errors`` holds the first problems, ``bad_rows`` counts all."""

    file: str
    rows_read: int
    rows_kept: int
    bad_rows: int
    errors: list[BadRow]


class BadFileError(Exception):
    """A file was refused: bad rows in reject mode, or unusable whatever the mode."""

    report: LoadReport

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


class _BadColumnError(Exception):
    """A column whose type cannot hold what it should (a Parquet list where ids belong...)."""


def event_files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Lists the event files to load, in order, without duplicates.

    Args:
        paths: files (taken as given) and directories (searched recursively for ``*.csv``,
            ``*.csv.gz`` and ``*.parquet`` files, in sorted order).

    Raises:
        FileNotFoundError: a path does not exist.
    """
    found: list[Path] = []
    for path in [paths] if isinstance(paths, str | Path) else paths:
        path = Path(path)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and _is_event_file(p))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(errno.ENOENT, "No such event file or directory", str(path))
    # Compared as resolved paths: a file named both alone and through its folder (or through a
    # link, or with "..") is read once, where it first came.
    seen: set[Path] = set()
    unique = []
    for file in found:
        if file.resolve() not in seen:
            seen.add(file.resolve())
            unique.append(file)
    return unique


def load_events(
    paths: str | Path | Sequence[str | Path],
    *,
    on_bad_rows: OnBadRows = "skip",
    max_errors: int = 20,
) -> tuple[pa.Table, list[LoadReport]]:
    """Loads event files into one table with the columns and types of ``EVENTS_SCHEMA``.

    Timestamps with ``Z`` or an offset are converted to UTC. Timestamps without one
    (``2020-01-01T10:00:00``, ``2020-01-01 10:00:00``), dates alone (``2020-01-01``) and naive
    Parquet timestamps are taken as UTC. A missing ``quantity`` is 1; missing optional columns
    are null; columns the contract does not know are ignored.

    Args:
        paths: files and directories, expanded by ``event_files``.
        on_bad_rows: ``"skip"`` drops bad rows, counts them and logs a warning per file;
            ``"reject"`` raises on the first file holding any.
        max_errors: how many problems each report lists.

    Returns:
        The events of all files, and one report per file.

    Raises:
        FileNotFoundError: a path does not exist.
        BadFileError: a file cannot be parsed or lacks a required column, or holds bad rows in
            reject mode.
    """
    tables, reports = [], []
    # The event ids kept so far: an id seen again, in this file or a later one, is a repeat.
    kept_ids: list[pa.Array] = []
    events = replace(_EVENTS, normalise=partial(_normalise_events, kept_ids=kept_ids))
    for path in event_files(paths):
        table, report = _load(path, events, on_bad_rows, max_errors)
        tables.append(table)
        reports.append(report)
    return (pa.concat_tables(tables) if tables else EVENTS_SCHEMA.empty_table()), reports


def load_items(
    path: str | Path, *, on_bad_rows: OnBadRows = "skip", max_errors: int = 20
) -> tuple[pa.Table, LoadReport]:
    """Loads an item catalogue into a table with the columns and types of ``ITEMS_SCHEMA``.

    An item_id seen again is a bad row: the first one is kept. Other columns are ignored.
    Arguments, modes and errors are those of ``load_events``.
    """
    return _load(Path(path), _ITEMS, on_bad_rows, max_errors)


def load_customers(
    path: str | Path, *, on_bad_rows: OnBadRows = "skip", max_errors: int = 20
) -> tuple[pa.Table, LoadReport]:
    """Loads customers: ``customer_id`` first, then every other column as a string attribute.

    A customer_id seen again is a bad row: the first one is kept. Arguments, modes and errors
    are those of ``load_events``.
    """
    return _load(Path(path), _CUSTOMERS, on_bad_rows, max_errors)


def _is_event_file(path: Path) -> bool:
    return path.name.lower().endswith(_EVENT_FILE_SUFFIXES)


def _is_parquet(path: Path) -> bool:
    """Parquet by its magic bytes, whatever the name (an export named ``.csv``), or by name (a
    broken file named ``.parquet`` is refused as Parquet, not read as text)."""
    return _magic(path) == _PARQUET_MAGIC or path.name.lower().endswith(".parquet")


def _compression(path: Path) -> str | None:
    """The compression of a text file by its magic bytes, not its name: warehouses and shell
    scripts leave ``.gz`` off a gzipped export, or on a plain one, as often as not."""
    head = _magic(path)
    return next((name for magic, name in _COMPRESSIONS if head.startswith(magic)), None)


def _magic(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(4)


_PARQUET_MAGIC = b"PAR1"
_COMPRESSIONS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))


# --- Reading -------------------------------------------------------------------------------


class _MalformedRows:
    """``invalid_row_handler`` for pyarrow.csv: counts rows with the wrong number of fields."""

    def __init__(self, keep: int) -> None:
        self.count = 0
        # (number, reason) as pyarrow gives them: its number counts records, not lines, and is
        # unknown (0) when it reads in threads. Used only when _scan_csv_lines cannot run.
        self.first: list[tuple[int, str]] = []
        self._keep = keep
        # The first malformed row whose text holds MAX_FIELD_LINES line breaks or more (an
        # unterminated quote that swallowed rows and left the wrong number of fields): its
        # ordinal among the malformed rows and how many lines it runs over.
        self.runaway: tuple[int, int] | None = None

    def __call__(self, row: pacsv.InvalidRow) -> str:
        self.count += 1
        if len(self.first) < self._keep:
            reason = _field_count(row.expected_columns, row.actual_columns)
            self.first.append((row.number or 0, reason))
        if self.runaway is None and row.text:
            breaks = len(re.findall(_LINE_BREAK, row.text.rstrip("\r\n")))
            if breaks >= MAX_FIELD_LINES:
                self.runaway = (self.count - 1, breaks + 1)
        return "skip"


@dataclass
class _Source:
    """One file read as columns (strings for CSV, as stored for Parquet), not yet validated."""

    path: Path
    table: pa.Table
    malformed: _MalformedRows


def _read(path: Path, kind: _Kind, max_errors: int) -> _Source:
    """Reads the columns ``kind`` uses, refusing a file that lacks a required one."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "No such file", str(path))
    malformed = _MalformedRows(max_errors)
    try:
        header = _parquet_header(path) if _is_parquet(path) else _csv_header(path)
        names = _column_names(path, header, kind)
        missing = [name for name in kind.required if name not in names.values()]
        if missing:
            raise _unusable(
                path, f"missing required column(s): {', '.join(missing)}{_separator_hint(header)}"
            )
        wanted = list(names)
        if _is_parquet(path):
            table = _read_parquet(path, wanted, kind.null_values)
        else:
            table = _read_csv(path, wanted, malformed, kind.null_values)
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise _unusable(path, f"is not UTF-8 text (byte {byte:#04x}): save it as UTF-8") from exc
    except (pa.ArrowException, OSError, ValueError, csv.Error) as exc:
        raise _unusable(path, f"cannot be read: {exc}") from exc
    return _Source(path, table.rename_columns([names[c] for c in table.column_names]), malformed)


def _column_names(path: Path, header: list[str], kind: _Kind) -> dict[str, str]:
    """The columns to read: header name -> contract name.

    A header matches a contract column whatever its case, surrounding spaces, and spaces or
    hyphens for underscores (``Customer_ID``, `` item id``): that is how warehouses and
    spreadsheets rename them, and reading them as unknown columns refused the whole file.
    Two headers naming one column refuse the file: which one holds the data is a guess.
    """
    known = kind.columns if kind.columns is not None else kind.required
    names: dict[str, str] = {}
    for raw in header:
        name = re.sub(r"[\s-]+", "_", raw.strip()).lower()
        if name not in known:
            if kind.columns is None:  # Customers: every other column is an attribute.
                names[raw] = raw
            continue
        same = [other for other, known_as in names.items() if known_as == name]
        if same:
            raise _unusable(path, f"columns {same[0]!r} and {raw!r} both name {name}")
        names[raw] = name
    return names


def _separator_hint(header: list[str]) -> str:
    """Why a header lacks the columns, when it is one field holding another separator."""
    if len(header) != 1:
        return ""
    found = [(header[0].count(sep), name) for sep, name in _OTHER_SEPARATORS]
    count, name = max(found)
    if not count:
        return ""
    return f" (its header is one field: separated by {name}? Files must be comma-separated)"


_OTHER_SEPARATORS = ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes"))


def _csv_header(path: Path) -> list[str]:
    # Read with the csv module, not pyarrow: a garbage file must fail here, cleanly, before
    # pyarrow hands undecodable rows to the invalid_row_handler.
    with _text(path) as text:
        header = next((record for record in csv.reader(text) if record), None)
    if header is None:
        raise _unusable(path, "is empty: no header line")
    return header


def _text(path: Path) -> io.TextIOWrapper:
    """The file as text, decompressed (by its magic bytes), BOM dropped."""
    stream = pa.input_stream(str(path), compression=_compression(path))
    return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")


def _read_csv(
    path: Path, columns: list[str], malformed: _MalformedRows, null_values: tuple[str, ...]
) -> pa.Table:
    # All strings: a stray "abc" in a number column must fail one row, not the whole file.
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in columns},
        include_columns=columns,
        null_values=list(null_values),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=malformed)
    stream = pa.input_stream(str(path), compression=_compression(path))
    return pacsv.read_csv(stream, parse_options=parse, convert_options=convert)


def _parquet_header(path: Path) -> list[str]:
    return pq.read_schema(path).names


def _read_parquet(path: Path, columns: list[str], null_values: tuple[str, ...]) -> pa.Table:
    table = pq.read_table(path, columns=columns)
    # An empty string (or a null spelt out) in Parquet means "no value", as in a CSV field.
    for index, field in enumerate(table.schema):
        if _is_text(field.type):
            column = pc.cast(table.column(index), pa.string())
            empty = pc.is_in(column, pa.array(null_values, pa.string()))
            table = table.set_column(
                index, field.name, pc.if_else(empty, pa.scalar(None, pa.string()), column)
            )
    return table


def _unusable(path: Path, why: str) -> BadFileError:
    report = LoadReport(file=str(path), rows_read=0, rows_kept=0, bad_rows=0, errors=[])
    return BadFileError(f"{path}: {why}", report)


# --- Validation, column by column ----------------------------------------------------------


class _Problems:
    """Bad rows found column by column: a mask per rule, reasons built for reported rows only."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._rules: list[tuple[np.ndarray, str | Callable[[int], str]]] = []

    def add(
        self, mask: pa.Array | pa.ChunkedArray | np.ndarray, reason: str | Callable[[int], str]
    ) -> None:
        """Flags the rows where ``mask`` is true (null counts as false)."""
        flags = as_mask(mask)
        if flags.any():
            self._rules.append((flags, reason))

    def bad(self) -> np.ndarray:
        bad = np.zeros(self.rows, dtype=bool)
        for flags, _ in self._rules:
            bad |= flags
        return bad

    def reasons(self, row: int) -> str:
        found = [r if isinstance(r, str) else r(row) for flags, r in self._rules if flags[row]]
        return "; ".join(found)


def _show(values: pa.Array | pa.ChunkedArray, row: int, *, quote: bool = True) -> str:
    value = values[row].as_py()
    text = repr(value) if quote and isinstance(value, str) else str(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _field_count(expected: int, actual: int) -> str:
    return f"expected {expected} fields, found {actual}"


def _column(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    return table.column(name) if name in table.column_names else None


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _strings(table: pa.Table, name: str) -> pa.ChunkedArray:
    """The column as strings (all null when absent)."""
    column = _column(table, name)
    if column is None:
        return pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    if column.type == pa.string():
        return column
    if pa.types.is_floating(column.type):
        return _float_strings(column)
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
        raise _BadColumnError(f"column {name} has type {column.type}, not text") from exc


# Whole floats up to here are exact, so they print as the integers they hold.
_EXACT_FLOAT_INT = 2.0**53


def _float_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A float column as text, the way pandas writes integer ids with gaps: NaN (and infinity)
    is a missing value, not the id "nan", and a whole number is written as an integer ("87", as
    an int64 column gives), not "87.0" or "1e+20"."""
    numbers = pc.cast(column, pa.float64())
    finite = pc.is_finite(numbers)
    whole = pc.and_(
        pc.and_(finite, pc.equal(pc.floor(numbers), numbers)),
        pc.less(pc.abs(numbers), _EXACT_FLOAT_INT),
    )
    no_number = pa.scalar(None, pa.float64())
    integers = pc.cast(pc.cast(pc.if_else(whole, numbers, no_number), pa.int64()), pa.string())
    others = pc.cast(pc.if_else(finite, numbers, no_number), pa.string())
    return pc.if_else(whole, integers, others)


def _ids(table: pa.Table, name: str, problems: _Problems, *, required: bool) -> pa.ChunkedArray:
    values = _whole_numbers(_strings(table, name))
    if required:
        problems.add(pc.is_null(values), f"{name} is required")
    longest = _ID_RULES.max_length
    lengths = pc.utf8_length(values)
    problems.add(
        pc.greater(lengths, longest),
        lambda row: f"{name} is {lengths[row].as_py()} characters long, more than {longest}",
    )
    problems.add(
        pc.invert(pc.match_substring_regex(values, _NO_CONTROL_CHARACTER)),
        lambda row: f"{name} {_show(values, row)} contains a control character",
    )
    return values


def _whole_numbers(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """An id column written as floats (``17850.0``: pandas writes integer ids with gaps so, to
    CSV too) reads as the integers it holds, as Parquet float ids do (``_float_strings``); only
    when every value is one, so an id that merely ends in ``.0`` (a version) keeps it."""
    if not pc.any(pc.ends_with(values, ".0")).as_py():
        return values
    if not pc.all(pc.match_substring_regex(values, _FLOAT_INTEGER)).as_py():
        return values
    return pc.replace_substring_regex(values, r"\.0+$", "")


_FLOAT_INTEGER = r"^-?\d+\.0+$"


def _one_of(
    table: pa.Table, name: str, allowed: tuple[str, ...], problems: _Problems
) -> pa.ChunkedArray:
    """The column in the vocabulary's spelling: case and surrounding spaces are an export's
    (``Purchase``, ``WEB``), not another value; a value it does not know is a bad row."""
    written = values = _strings(table, name)
    if not pc.all(pc.is_in(written, pa.array(allowed))).as_py():  # Spare clean files the copy.
        values = pc.utf8_lower(pc.utf8_trim_whitespace(written))
    problems.add(pc.is_null(values), f"{name} is required")
    unknown = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, pa.array(allowed))))
    problems.add(
        unknown, lambda row: f"{name} {_show(written, row)} is not one of {', '.join(allowed)}"
    )
    return values


def _require_items(
    item_id: pa.ChunkedArray, event_type: pa.ChunkedArray, problems: _Problems
) -> None:
    missing = pc.and_(pc.is_null(item_id), pc.is_in(event_type, _ITEM_EVENT_TYPES))
    problems.add(
        missing, lambda row: f"item_id is required for event_type {_show(event_type, row)}"
    )


def _numbers(
    table: pa.Table, name: str, problems: _Problems, *, non_negative: bool
) -> pa.ChunkedArray:
    """The column as float64, null where absent; flags values that are not numbers."""
    column = _column(table, name)
    if column is None:
        return pa.chunked_array([pa.nulls(table.num_rows, pa.float64())])
    numbers, malformed = _to_numbers(column, name)
    problems.add(malformed, lambda row: f"{name} {_show(column, row)} is not a number")
    if non_negative:
        problems.add(
            pc.less(numbers, _MIN_AMOUNT),
            lambda row: f"{name} {_show(column, row, quote=False)} must be >= {_MIN_AMOUNT:g}",
        )
    return numbers


def _to_numbers(column: pa.ChunkedArray, name: str) -> tuple[pa.ChunkedArray, np.ndarray]:
    """Float64 values and a mask of those that are not numbers (text that is not, or NaN)."""
    if _is_text(column.type):
        strings, malformed = shaped(pc.cast(column, pa.string()), _NUMBER)
        numbers, failed = bisect(strings, cast_to(pa.float64()))
        return pa.chunked_array([numbers]), malformed | failed
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise _BadColumnError(f"column {name} has type {kind}, not a number")
    numbers = pc.cast(column, pa.float64())
    return numbers, as_mask(pc.is_nan(numbers))


def _timestamps(table: pa.Table, problems: _Problems) -> pa.ChunkedArray:
    column = table.column("timestamp")
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        stamps = iso_time.typed_to_utc(column)
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        stamps, no_time = unix_time.from_numbers(column)
        problems.add(no_time, lambda row: f"timestamp {_show(column, row)} {unix_time.REASON}")
    elif _is_text(column.type):
        stamps = _text_to_utc(_strings(table, "timestamp"), column, problems)
    else:
        raise _BadColumnError(f"column timestamp has type {column.type}, not a time")
    problems.add(pc.is_null(column, nan_is_null=True), "timestamp is required")
    now = datetime.now(UTC)
    problems.add(
        pc.less(stamps, pa.scalar(EARLIEST, _UTC)),
        lambda row: f"timestamp {_show(column, row)} is before {EARLIEST:%Y-%m-%d}",
    )
    problems.add(
        pc.greater(stamps, pa.scalar(now + FUTURE_TOLERANCE, _UTC)),
        lambda row: (
            f"timestamp {_show(column, row)} is more than "
            f"{FUTURE_TOLERANCE.total_seconds() / 3600:g} hours after now ({now:%Y-%m-%dT%H:%MZ})"
        ),
    )
    return stamps


def _recorded(table: pa.Table) -> pa.ChunkedArray:
    """``recorded_at`` from the exporter's ``stream_id`` (null where absent or not a stream id:
    such an event counts as recorded whenever its timestamp allows, the safe reading)."""
    ids = _strings(table, "stream_id")
    valid = pc.fill_null(pc.match_substring_regex(ids, _STREAM_ID), False)
    ids = pc.if_else(valid, ids, pa.scalar(None, pa.string()))
    millis = pc.cast(pc.list_element(pc.split_pattern(ids, "-", max_splits=1), 0), pa.int64())
    return pc.cast(pc.multiply(millis, 1000), _UTC)


def _text_to_utc(
    strings: pa.ChunkedArray, column: pa.ChunkedArray, problems: _Problems
) -> pa.ChunkedArray:
    """ISO-8601 text and Unix times written as numbers (``training.unix_time``) to UTC."""
    numeric = pc.match_substring_regex(strings, unix_time.SHAPE)
    if not pc.any(numeric).as_py():
        stamps, malformed = iso_time.to_utc(strings)
        problems.add(malformed, lambda row: f"timestamp {_show(column, row)} is not ISO-8601")
        return stamps
    no_string = pa.scalar(None, pa.string())
    numbers = pc.if_else(numeric, strings, no_string).combine_chunks()
    unix, no_time = unix_time.from_text(numbers)
    iso, malformed = iso_time.to_utc(pc.if_else(numeric, no_string, strings))
    problems.add(no_time, lambda row: f"timestamp {_show(column, row)} {unix_time.REASON}")
    problems.add(malformed, lambda row: f"timestamp {_show(column, row)} is not ISO-8601")
    return pa.chunked_array([pc.if_else(pa.array(as_mask(numeric)), unix, iso.combine_chunks())])


def _first_only(ids: pa.ChunkedArray, name: str, problems: _Problems) -> None:
    """Flags every repeat of an id among the otherwise good rows: the first one is kept."""
    good = np.flatnonzero(~problems.bad())
    codes = pc.dictionary_encode(ids.take(good).combine_chunks()).indices
    _, first = np.unique(codes.to_numpy(zero_copy_only=False), return_index=True)
    repeat = np.ones(len(good), dtype=bool)
    repeat[first] = False
    flags = np.zeros(problems.rows, dtype=bool)
    flags[good[repeat]] = True
    problems.add(flags, lambda row: f"duplicate {name} {_show(ids, row)}: the first is kept")


def _normalise_events(
    table: pa.Table, problems: _Problems, kept_ids: list[pa.Array] | None = None
) -> pa.Table:
    item_id = _ids(table, "item_id", problems, required=False)
    event_type = _one_of(table, "event_type", EVENT_TYPES, problems)
    _require_items(item_id, event_type, problems)
    event_type, quantity, price = _returns(
        event_type,
        _numbers(table, "quantity", problems, non_negative=False),
        _numbers(table, "price", problems, non_negative=False),
    )
    _at_least_zero(table, "quantity", quantity, problems)
    _at_least_zero(table, "price", price, problems)
    columns = {
        "customer_id": _ids(table, "customer_id", problems, required=True),
        "item_id": item_id,
        "event_type": event_type,
        "channel": _one_of(table, "channel", CHANNELS, problems),
        "timestamp": _timestamps(table, problems),
        "quantity": pc.fill_null(quantity, 1.0),
        "price": price,
        "store_id": _ids(table, "store_id", problems, required=False),
        "session_id": _ids(table, "session_id", problems, required=False),
        "request_id": _ids(table, "request_id", problems, required=False),
        "rating": _numbers(table, "rating", problems, non_negative=False),
        "event_id": _ids(table, "event_id", problems, required=False),
        "recorded_at": _recorded(table),
    }
    # Last: only otherwise good rows count as an id's first.
    _once_per_event_id(columns["event_id"], problems, [] if kept_ids is None else kept_ids)
    return pa.Table.from_arrays([columns[f.name] for f in EVENTS_SCHEMA], schema=EVENTS_SCHEMA)


def _once_per_event_id(
    event_id: pa.ChunkedArray, problems: _Problems, kept_ids: list[pa.Array]
) -> None:
    """Flags each good row repeating the event_id of an earlier one, in this file or one loaded
    before it (``kept_ids``, to which this file's are added), as the events API records an
    event_id once: an export run twice, or a file given under two names, is not learnt twice."""
    good = np.flatnonzero(~problems.bad() & as_mask(pc.is_valid(event_id)))
    if not len(good):
        return
    ids = event_id.take(good).combine_chunks()
    codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(codes, return_index=True)
    repeat = np.ones(len(good), dtype=bool)
    repeat[first] = False
    if kept_ids:
        repeat |= as_mask(pc.is_in(ids, value_set=pa.concat_arrays(kept_ids)))
    flags = np.zeros(problems.rows, dtype=bool)
    flags[good[repeat]] = True
    problems.add(flags, lambda row: f"duplicate event_id {_show(event_id, row)}: the first is kept")
    kept_ids.append(ids.filter(pa.array(~repeat)))


def _returns(
    event_type: pa.ChunkedArray, quantity: pa.ChunkedArray, price: pa.ChunkedArray
) -> tuple[pa.ChunkedArray, pa.ChunkedArray, pa.ChunkedArray]:
    """Purchase lines with a negative quantity are returns, and a return's amounts magnitudes.

    Tills and order systems export a return as the sale line negated (the raw UCI Online
    Retail file's cancellations: quantity -6 at the unit price), some with the refund negated
    too: read as ``return`` events of that many units and that refund, as the events API records
    them, they are kept and weigh as returns (``weights.event_types``), instead of being dropped
    as bad rows or learnt as purchases. Zero quantities stay as they are.
    """
    negative = pc.any(pc.less(quantity, 0.0)).as_py() or pc.any(pc.less(price, 0.0)).as_py()
    if not negative:
        return event_type, quantity, price
    returned = pc.fill_null(
        pc.and_(pc.less(quantity, 0.0), pc.equal(event_type, "purchase")), False
    )
    event_type = pc.if_else(returned, "return", event_type)
    is_return = pc.fill_null(pc.equal(event_type, "return"), False)
    quantity = pc.if_else(is_return, pc.abs(quantity), quantity)
    price = pc.if_else(is_return, pc.abs(price), price)
    return event_type, quantity, price


def _at_least_zero(
    table: pa.Table, name: str, numbers: pa.ChunkedArray, problems: _Problems
) -> None:
    written = _column(table, name)
    problems.add(
        pc.less(numbers, _MIN_AMOUNT),
        lambda row: f"{name} {_show(written, row, quote=False)} must be >= {_MIN_AMOUNT:g}",
    )


def _normalise_items(table: pa.Table, problems: _Problems) -> pa.Table:
    item_id = _ids(table, "item_id", problems, required=True)
    price = _numbers(table, "price", problems, non_negative=True)
    _first_only(item_id, "item_id", problems)
    texts = [_strings(table, name) for name in ("title", "category", "brand")]
    return pa.Table.from_arrays([item_id, *texts, price], schema=ITEMS_SCHEMA)


def _normalise_customers(table: pa.Table, problems: _Problems) -> pa.Table:
    customer_id = _ids(table, "customer_id", problems, required=True)
    _first_only(customer_id, "customer_id", problems)
    others = [name for name in table.column_names if name != "customer_id"]
    columns = [customer_id, *(_strings(table, name) for name in others)]
    return pa.Table.from_arrays(columns, names=["customer_id", *others])


@dataclass(frozen=True)
class _Kind:
    """What one kind of file holds: the columns read (None: all), required ones, validation."""

    columns: tuple[str, ...] | None
    required: tuple[str, ...]
    normalise: Callable[[pa.Table, _Problems], pa.Table]
    # No value holds a line break (see MAX_FIELD_LINES); titles and attributes may.
    single_line: bool = False
    # Values read as missing. Events also take the nulls databases and Python spell out: a
    # guest checkout exported as customer_id "NULL" was one customer who bought everything.
    # Catalogue and customer attributes keep them ("None" is a household's number of kids).
    null_values: tuple[str, ...] = ("",)


_EVENTS = _Kind(
    columns=_EVENT_FILE_COLUMNS,
    required=("customer_id", "item_id", "event_type", "channel", "timestamp"),
    normalise=_normalise_events,
    single_line=True,
    null_values=("", "NULL", "null", "\\N", "None"),
)
_ITEMS = _Kind(columns=tuple(ITEMS_SCHEMA.names), required=("item_id",), normalise=_normalise_items)
_CUSTOMERS = _Kind(columns=None, required=("customer_id",), normalise=_normalise_customers)


# --- Loading one file and reporting --------------------------------------------------------


def _load(
    path: Path, kind: _Kind, on_bad_rows: OnBadRows, max_errors: int
) -> tuple[pa.Table, LoadReport]:
    if on_bad_rows not in get_args(OnBadRows) or max_errors < 0:
        raise ValueError(f"on_bad_rows={on_bad_rows!r}, max_errors={max_errors}: not allowed")
    source = _read(path, kind, max_errors)
    if kind.single_line and not _is_parquet(path):
        _refuse_runaway_quotes(source)
    problems = _Problems(source.table.num_rows)
    try:
        table = kind.normalise(source.table, problems)
    except _BadColumnError as exc:
        raise _unusable(path, str(exc)) from exc
    bad = problems.bad()
    report = _report(source, problems, bad, max_errors)
    if report.bad_rows:
        if on_bad_rows == "reject":
            raise BadFileError(_rejection(report), report)
        log.warning(
            "%s: skipped %d bad row(s) of %d; first: %s",
            report.file,
            report.bad_rows,
            report.rows_read,
            "; ".join(f"line {e.line}: {e.reason}" for e in report.errors[:5]),
        )
    return (table.filter(pa.array(~bad)) if bad.any() else table), report


# A value of an events file never holds a line break: a quoted one (a stray "\n" in an id) is a
# bad row, but a field running over more lines than that is an unterminated quote swallowing the
# rows after it (half a file reported as one bad row), so the file is refused instead.
MAX_FIELD_LINES = 2
_LINE_BREAK = r"\r\n|\r|\n"


def _refuse_runaway_quotes(source: _Source) -> None:
    """Raises BadFileError naming the first field that runs over more than MAX_FIELD_LINES."""
    if source.malformed.runaway is not None:
        ordinal, lines = source.malformed.runaway
        _, first = _locate(source, np.empty(0, np.int64), ordinal + 1)
        line = first[ordinal][0] if len(first) > ordinal else 0
        where = f"line {line}: a" if line else "A"
        raise _unusable(
            source.path,
            f"{where} row runs over {lines} lines with the wrong number of fields "
            "(an unterminated quote?): refused rather than lose the rows inside it",
        )
    breaks = np.zeros(source.table.num_rows, dtype=np.int64)
    for column in source.table.columns:
        if _is_text(column.type) and _has_line_break(column):
            # A quote left open to the end of the file holds the file's last line break too.
            ended = pc.utf8_rtrim(column, characters="\r\n")
            counts = pc.count_substring_regex(ended, _LINE_BREAK).fill_null(0)
            breaks = np.maximum(breaks, counts.to_numpy(zero_copy_only=False))
    runaway = np.flatnonzero(breaks >= MAX_FIELD_LINES)
    if not len(runaway):
        return
    row = runaway[:1]
    [line], _ = _locate(source, row, 0)
    lines = int(breaks[row[0]]) + 1
    raise _unusable(
        source.path,
        f"line {line}: a quoted field runs over {lines} lines, to line {line + lines - 1} "
        "(an unterminated quote?): refused rather than lose the rows inside it",
    )


def _has_line_break(column: pa.ChunkedArray) -> bool:
    # Plain substring tests first: the regex count costs 2.5 times as much, on every clean file.
    return any(pc.any(pc.match_substring(column, c)).as_py() for c in ("\n", "\r"))


def _rejection(report: LoadReport) -> str:
    problems = "\n".join(f"  {e.file}:{e.line}: {e.reason}" for e in report.errors)
    return f"{report.file}: {report.bad_rows} bad row(s) of {report.rows_read}:\n{problems}"


def _report(source: _Source, problems: _Problems, bad: np.ndarray, max_errors: int) -> LoadReport:
    rows = np.flatnonzero(bad)[:max_errors]
    malformed = source.malformed
    lines, malformed_first = _locate(source, rows, min(malformed.count, max_errors))
    file = str(source.path)
    errors = [
        BadRow(file, line, problems.reasons(row)) for row, line in zip(rows, lines, strict=True)
    ]
    errors += [BadRow(file, line, reason) for line, reason in malformed_first]
    errors.sort(key=lambda error: error.line)
    kept = problems.rows - int(bad.sum())
    return LoadReport(
        file=file,
        rows_read=problems.rows + malformed.count,
        rows_kept=kept,
        bad_rows=problems.rows + malformed.count - kept,
        errors=errors[:max_errors],
    )


def _locate(
    source: _Source, rows: np.ndarray, malformed_wanted: int
) -> tuple[list[int], list[tuple[int, str]]]:
    """File lines of the given rows (indexes into the rows read) and of the first malformed rows."""
    if _is_parquet(source.path):
        return (rows + 1).tolist(), []
    if not len(rows) and not malformed_wanted:
        return [], []
    try:
        return _scan_csv_lines(source.path, rows, malformed_wanted)
    except (csv.Error, OSError, UnicodeError, KeyError):
        # Out of reach of the csv module (a huge field...): the best guess left is pyarrow's.
        return (rows + 2).tolist(), source.malformed.first[:malformed_wanted]


def _scan_csv_lines(
    path: Path, rows: np.ndarray, malformed_wanted: int
) -> tuple[list[int], list[tuple[int, str]]]:
    """Re-reads a CSV file with the csv module to find physical line numbers.

    pyarrow does not say where a row came from, and blank lines, quoted newlines and skipped
    malformed rows all shift it. This is the error path only, and it stops at the last line
    it needs.
    """
    wanted, last = set(rows.tolist()), int(rows[-1]) if len(rows) else -1
    lines: dict[int, int] = {}
    malformed: list[tuple[int, str]] = []
    row, line, fields = -1, 0, 0
    with _text(path) as text:
        reader = csv.reader(text, strict=False)
        for record in reader:
            start, line = line + 1, reader.line_num
            if not record:  # A blank line: pyarrow skips it too.
                continue
            if not fields:
                fields = len(record)
            elif len(record) != fields:
                if len(malformed) < malformed_wanted:
                    malformed.append((start, _field_count(fields, len(record))))
            else:
                row += 1
                if row in wanted:
                    lines[row] = start
            if row >= last and len(malformed) >= malformed_wanted:
                break
    return [lines[r] for r in rows.tolist()], malformed
