"""Many rows in one SQL statement: a multi-row INSERT, an UPDATE joined to the rows, and a
DELETE of the rows that match.

An executemany runs its statement once per row: on SQLite, Python's driver gives up the
interpreter lock around every row and has to win it back from the event loop; on PostgreSQL
every row is executed on its own. One statement per batch is one step.

On SQLite the rows are a VALUES list, one placeholder per value; its SQL text is built once per
row count and kept. On PostgreSQL each column goes as one array, unnested: the SQL text is the
same for any number of rows, so psycopg converts it once instead of parsing a text of thousands
of placeholders for every batch, and PostgreSQL can keep it prepared: the database writer's
thread used 27-33 % less CPU time on a burst's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import Connection, TableClause
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

# Parameters per statement at most: below SQLite's limit (32,766) and PostgreSQL's (65,535).
MAX_PARAMETERS = 30_000
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
Row = Sequence[Any]


def insert_rows(
    session: Session,
    table: TableClause,
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    unless_taken: str | None = None,
) -> int:
    """INSERT rows (values in the order of columns) into table, in as few statements as fit;
    the number of rows inserted.

    unless_taken names a column with a unique constraint: a row whose value in it is stored
    already is left out (ON CONFLICT DO NOTHING), instead of failing the statement.
    """
    connection = session.connection()
    columns = tuple(columns)
    dialect = connection.dialect
    sql = partial(_insert_sql, dialect, table, columns, unless_taken)
    return _write(connection, table, columns, rows, sql)


def update_rows(
    session: Session,
    table: TableClause,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Row],
    constants: Mapping[str, Any] | None = None,
) -> None:
    """UPDATE table, each row (key value first, then one value per column) matched by key;
    constants are set on every row matched."""
    connection = session.connection()
    dialect = connection.dialect
    constants = dict(constants or {})
    fixed = tuple(constants)
    row_columns = (key, *columns)
    fixed_values = _parameters(dialect, table, fixed, [tuple(constants.values())])
    sql = partial(_update_sql, dialect, table, row_columns, fixed)
    _write(connection, table, row_columns, rows, sql, first=fixed_values)


def delete_rows(
    connection: Connection, table: TableClause, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """DELETE the rows of table whose values in columns equal one of rows. The first column
    should be a key: each row is looked up by it, never found by reading the table."""
    columns = tuple(columns)
    sql = partial(_delete_sql, connection.dialect, table, columns)
    _write(connection, table, columns, rows, sql, keys_first=True)


def _write(
    connection: Connection,
    table: TableClause,
    columns: tuple[str, ...],
    rows: Sequence[Row],
    sql: Callable[[int | None], str],
    first: tuple[Any, ...] = (),
    keys_first: bool = False,
) -> int:
    """Run the statement sql(count) makes for rows: on PostgreSQL once, with one array per
    column (count None); elsewhere once per chunk that fits, with one placeholder per value
    (count: the chunk's rows), after the parameters `first` and, with keys_first, the chunk's
    keys (the first column). The number of rows the statements changed."""
    dialect = connection.dialect
    if dialect.name == "postgresql":
        parameters = first + _arrays(dialect, table, columns, rows)
        return connection.exec_driver_sql(sql(None), parameters).rowcount
    changed = 0
    for chunk in _chunks(rows, len(columns) + keys_first):
        parameters = first
        if keys_first:
            parameters += _parameters(dialect, table, columns[:1], [row[:1] for row in chunk])
        parameters += _parameters(dialect, table, columns, chunk)
        changed += connection.exec_driver_sql(sql(len(chunk)), parameters).rowcount
    return changed


def _chunks(rows: Sequence[Row], width: int) -> list[Sequence[Row]]:
    size = max(1, MAX_PARAMETERS // max(width, 1))
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _parameters(
    dialect: Dialect, table: TableClause, columns: tuple[str, ...], rows: Sequence[Row]
) -> tuple[Any, ...]:
    """The rows' values flattened, each converted as its column's type converts it."""
    converters = _converters(dialect, table, columns)
    return tuple(
        value if convert is None or value is None else convert(value)
        for row in rows
        for convert, value in zip(converters, row, strict=True)
    )


def _arrays(
    dialect: Dialect, table: TableClause, columns: tuple[str, ...], rows: Sequence[Row]
) -> tuple[list[Any], ...]:
    """The rows' values as one list per column, each converted as its column's type converts it."""
    converters = _converters(dialect, table, columns)
    by_column: list[list[Any]] = [[] for _ in columns]
    for row in rows:
        for values, convert, value in zip(by_column, converters, row, strict=True):
            values.append(value if convert is None or value is None else convert(value))
    return tuple(by_column)


@lru_cache(maxsize=64)
def _converters(
    dialect: Dialect, table: TableClause, columns: tuple[str, ...]
) -> tuple[Callable[[Any], Any] | None, ...]:
    # The dialect's own implementation: a type decorator's generic one leaves a datetime to the
    # driver, and SQLite's driver would store it in another format than the ORM does.
    return tuple(
        table.c[column].type.dialect_impl(dialect).bind_processor(dialect) for column in columns
    )


@lru_cache(maxsize=1024)
def _insert_sql(
    dialect: Dialect,
    table: TableClause,
    columns: tuple[str, ...],
    unless_taken: str | None,
    count: int | None,
) -> str:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(column) for column in columns)
    target = dialect.identifier_preparer.format_table(table)
    if count is None:
        rows = f"SELECT * FROM {_unnest(dialect, table, columns)}"  # noqa: S608
    else:
        rows = f"VALUES {_values(dialect, table, columns, count, typed=False)}"
    # The same clause on SQLite and PostgreSQL. (SQLite could read it as a join's ON after a
    # SELECT; its rows are a VALUES list.)
    skip = "" if unless_taken is None else f" ON CONFLICT ({quote(unless_taken)}) DO NOTHING"
    # Only quoted names, type names and placeholders go into the text; values are bound.
    return f"INSERT INTO {target} ({names}) {rows}{skip}"


@lru_cache(maxsize=1024)
def _update_sql(
    dialect: Dialect,
    table: TableClause,
    row_columns: tuple[str, ...],
    fixed: tuple[str, ...],
    count: int | None,
) -> str:
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    if count is None:
        names = [quote(column) for column in row_columns]
        rows = f"{_unnest(dialect, table, row_columns)} AS v({', '.join(names)})"
    else:
        # A VALUES list names its columns column1, column2 ... on SQLite and on PostgreSQL alike.
        names = [f"column{position}" for position in range(1, len(row_columns) + 1)]
        rows = f"(VALUES {_values(dialect, table, row_columns, count, typed=True)}) AS v"
    placeholder = _placeholder(dialect)
    assignments = [f"{quote(column)} = {placeholder}" for column in fixed] + [
        f"{quote(column)} = v.{name}"
        for column, name in zip(row_columns[1:], names[1:], strict=True)
    ]
    where = f"{target}.{quote(row_columns[0])} = v.{names[0]}"
    # Only quoted names, type names and placeholders go into the text; every value is bound.
    return f"UPDATE {target} SET {', '.join(assignments)} FROM {rows} WHERE {where}"  # noqa: S608


@lru_cache(maxsize=1024)
def _delete_sql(
    dialect: Dialect, table: TableClause, columns: tuple[str, ...], count: int | None
) -> str:
    quote = dialect.identifier_preparer.quote
    target = dialect.identifier_preparer.format_table(table)
    names = ", ".join(quote(column) for column in columns)
    if count is None:
        rows = f"{_unnest(dialect, table, columns)} AS v({names})"
        matched = " AND ".join(f"{target}.{quote(name)} = v.{quote(name)}" for name in columns)
        # Only quoted names, type names and placeholders go into the text.
        return f"DELETE FROM {target} USING {rows} WHERE {matched}"  # noqa: S608
    keys = ", ".join([_placeholder(dialect)] * count)
    rows = _values(dialect, table, columns, count, typed=False)
    # The key list leads, so that SQLite looks each row up; matched by the rows alone, it read
    # the whole table. Only quoted names and placeholders go into the text.
    where = f"{quote(columns[0])} IN ({keys}) AND ({names}) IN (VALUES {rows})"
    return f"DELETE FROM {target} WHERE {where}"  # noqa: S608


def _unnest(dialect: Dialect, table: TableClause, columns: tuple[str, ...]) -> str:
    """unnest() of one array per column, each cast to an array of its column's type (a list of
    NULLs would have no type of its own). The arrays go in psycopg's binary format (%b): its text
    format escapes every element with a regular expression, which cost a fifth of the writer's
    time."""
    arrays = ", ".join(
        f"CAST(%b AS {table.c[column].type.compile(dialect=dialect)}[])" for column in columns
    )
    return f"unnest({arrays})"


def _values(
    dialect: Dialect, table: TableClause, columns: tuple[str, ...], count: int, *, typed: bool
) -> str:
    placeholder = _placeholder(dialect)
    row = f"({', '.join([placeholder] * len(columns))})"
    if not typed or dialect.name == "sqlite":
        return ", ".join([row] * count)
    # Outside an INSERT, PostgreSQL types a VALUES column from its contents, and a column of
    # NULLs would be text: the first row's casts give each column its table column's type.
    # (Not on SQLite, where a CAST would change what is stored.)
    first = ", ".join(
        f"CAST({placeholder} AS {table.c[column].type.compile(dialect=dialect)})"
        for column in columns
    )
    return ", ".join([f"({first})"] + [row] * (count - 1))


def _placeholder(dialect: Dialect) -> str:
    try:
        return _PLACEHOLDERS[dialect.paramstyle]
    except KeyError:
        raise NotImplementedError(
            f"no multi-row statements for the {dialect.paramstyle!r} parameter style"
        ) from None
