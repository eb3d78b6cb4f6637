"""Parquet rosters and histories (pyarrow): files and partitioned datasets,
read in batches, with the same checks, rejects and row numbers as CSV."""

from __future__ import annotations

import csv

import pytest

from conftest import EXAMPLES, example_run_options
from engine.errors import DataError
from engine.run.driver import run_batch

pa = pytest.importorskip("pyarrow", reason="the cluster extra is not installed")
pq = pytest.importorskip("pyarrow.parquet")

SAME = ("decisions.jsonl", "enrollments.csv", "changes.csv")


def _table(path, types: dict | None = None):
    """A CSV file as an Arrow table: every column text, or as ``types`` say."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    columns = {}
    for i, name in enumerate(header):
        values = [row[i] if i < len(row) else None for row in body]
        convert = (types or {}).get(name)
        columns[name] = pa.array([convert(v) if convert and v else v for v in values])
    return pa.table(columns)


def _rejects(folder):
    with (folder / "out" / "rejects.csv").open(encoding="utf-8") as handle:
        return [
            (r["row"], r["partner_id"], r["column"], r["reason"]) for r in csv.DictReader(handle)
        ]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, ruleset):
    folder = tmp_path_factory.mktemp("csv")
    run_batch(ruleset, example_run_options(folder))
    return folder


def test_a_parquet_roster_and_history_decide_as_their_csv_does(tmp_path, ruleset, csv_run):
    roster, history = tmp_path / "roster.parquet", tmp_path / "performance.parquet"
    pq.write_table(_table(EXAMPLES / "roster.csv"), roster, row_group_size=7)
    pq.write_table(_table(EXAMPLES / "performance.csv"), history, row_group_size=50)
    run_batch(ruleset, example_run_options(tmp_path, roster=roster, performance=history))
    for name in SAME:
        assert (tmp_path / "out" / name).read_bytes() == (csv_run / "out" / name).read_bytes()
    assert _rejects(tmp_path) == _rejects(csv_run)  # the same rows, numbered alike


def test_a_partitioned_dataset_is_read_in_the_order_of_its_files(tmp_path, ruleset, csv_run):
    table = _table(EXAMPLES / "roster.csv")
    dataset = tmp_path / "roster"
    (dataset / "region=b").mkdir(parents=True)
    pq.write_table(table.slice(0, 10), dataset / "part-0.parquet")
    pq.write_table(table.slice(10, 15), dataset / "part-1.parquet")
    pq.write_table(table.slice(25), dataset / "region=b" / "part-2.parquet")
    history = tmp_path / "performance.parquet"
    pq.write_table(_table(EXAMPLES / "performance.csv"), history)
    run_batch(ruleset, example_run_options(tmp_path, roster=dataset, performance=history))
    for name in SAME:
        assert (tmp_path / "out" / name).read_bytes() == (csv_run / "out" / name).read_bytes()
    with (tmp_path / "out" / "rejects.csv").open(encoding="utf-8") as handle:
        late = [r for r in csv.DictReader(handle) if r["partner_id"] == "P-1033"]
    assert late[0]["row"] == "34" and late[0]["source_file"].endswith("part-2.parquet")


def test_typed_parquet_values_are_read_as_their_text_would_be(tmp_path, ruleset, csv_run):
    import datetime as dt

    counts = {name: int for name in ("certified_sales", "certified_technical", "staff_sales")}
    types = {**counts, "joined_on": dt.date.fromisoformat}
    good = tmp_path / "roster.parquet"
    lines = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").splitlines()
    good_rows = tmp_path / "good.csv"  # the example's last two rows are bad on purpose
    good_rows.write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    typed = _table(good_rows, types)
    pq.write_table(typed, good)
    assert typed.schema.field("joined_on").type == pa.date32()
    run_batch(
        ruleset,
        example_run_options(tmp_path, roster=good, performance=EXAMPLES / "performance.csv"),
    )
    decided = (tmp_path / "out" / "decisions.jsonl").read_text().splitlines()
    assert decided == (csv_run / "out" / "decisions.jsonl").read_text().splitlines()[: len(decided)]


def test_infinite_and_nan_parquet_numbers_set_their_row_aside(tmp_path, ruleset):
    """A float column can hold infinity and NaN (JSON Lines cannot): in a
    whole-number field they stopped the run with an OverflowError; they are
    out of range, their row set aside, in a money or number field too."""
    table = _table(EXAMPLES / "roster.csv", {"staff_sales": float, "certified_sales": float})
    staff = table.column("staff_sales").to_pylist()
    staff[2], staff[3] = float("inf"), float("nan")
    certified = table.column("certified_sales").to_pylist()
    certified[4] = float("-inf")
    table = table.set_column(
        table.schema.get_field_index("staff_sales"), "staff_sales", pa.array(staff)
    )
    table = table.set_column(
        table.schema.get_field_index("certified_sales"), "certified_sales", pa.array(certified)
    )
    roster, history = tmp_path / "roster.parquet", tmp_path / "performance.parquet"
    pq.write_table(table, roster)
    figures = _table(EXAMPLES / "performance.csv", {"revenue": float})
    revenue = figures.column("revenue").to_pylist()
    revenue[0] = float("inf")
    figures = figures.set_column(
        figures.schema.get_field_index("revenue"), "revenue", pa.array(revenue)
    )
    pq.write_table(figures, history)
    run_batch(
        ruleset,
        example_run_options(tmp_path, roster=roster, performance=history, max_rejects=0.5),
    )
    found = {(row, column): reason for row, _, column, reason in _rejects(tmp_path)}
    assert found[("4", "staff_sales")] == "'inf' is out of range"
    assert found[("5", "staff_sales")] == "'nan' is out of range"
    assert found[("6", "certified_sales")] == "'-inf' is out of range"
    assert found[("2", "revenue")] == "'inf' is out of range"
    decided = (tmp_path / "out" / "decisions.jsonl").read_text().splitlines()
    assert len(decided) == 34 - 2 - 3  # the example's two bad rows, and these three


def test_text_stored_as_bytes_is_read_as_text_and_bytes_that_are_not_text_set_aside(
    tmp_path, ruleset, csv_run
):
    """Some warehouses write text as binary columns without their UTF-8 mark:
    the letters said "Dear b'Northwind Integration Ltd'" and partner ids
    b'P-1001' matched no history. Bytes that are UTF-8 are that text, in
    plain and list columns; others set their row aside."""
    table = _table(EXAMPLES / "roster.csv")

    def as_bytes(name, kind=None, spoil=None):
        values = [
            v if v is None or isinstance(v, bytes) else v.encode()
            for v in table.column(name).to_pylist()
        ]
        if spoil is not None:
            values[spoil] += b"\xff"
        return table.schema.get_field_index(name), name, pa.array(values, kind or pa.binary())

    for name in ("partner_id", "partner_name", "country"):
        table = table.set_column(*as_bytes(name, pa.large_binary() if name == "country" else None))
    verticals = [
        None if v is None else [x.encode() for x in v.split(";")]
        for v in table.column("focus_verticals").to_pylist()
    ]
    table = table.set_column(
        table.schema.get_field_index("focus_verticals"),
        "focus_verticals",
        pa.array(verticals, pa.list_(pa.binary())),
    )
    roster = tmp_path / "roster.parquet"
    pq.write_table(table, roster)
    run_batch(ruleset, example_run_options(tmp_path, roster=roster))
    for name in SAME:
        assert (tmp_path / "out" / name).read_bytes() == (csv_run / "out" / name).read_bytes()
    assert _rejects(tmp_path) == _rejects(csv_run)

    spoiled = tmp_path / "spoiled"
    spoiled.mkdir()
    table = table.set_column(*as_bytes("partner_name", spoil=3))
    pq.write_table(table, spoiled / "roster.parquet")
    run_batch(ruleset, example_run_options(spoiled, roster=spoiled / "roster.parquet"))
    set_aside = [r for r in _rejects(spoiled) if r not in _rejects(csv_run)]
    assert set_aside == [
        (
            "5",
            "P-1004",
            "partner_name",
            "is binary data that is not UTF-8 text; export the column as text (UTF-8)",
        )
    ]


def test_whole_number_ids_stored_as_floats_are_the_ids_the_history_names(tmp_path, ruleset):
    """pandas writes a column of whole numbers with gaps as floats: the id
    1001.0 is partner 1001 of a CSV history, not an unknown "1001.0"."""
    roster_csv = (EXAMPLES / "roster.csv").read_text(encoding="utf-8").replace("P-", "")
    history_csv = (EXAMPLES / "performance.csv").read_text(encoding="utf-8").replace("P-", "")
    (tmp_path / "roster.csv").write_text(roster_csv, encoding="utf-8")
    (tmp_path / "performance.csv").write_text(history_csv, encoding="utf-8")
    table = _table(tmp_path / "roster.csv", {"partner_id": float})
    assert table.schema.field("partner_id").type == pa.float64()
    pq.write_table(table, tmp_path / "roster.parquet")
    for name, roster in (("csv", "roster.csv"), ("parquet", "roster.parquet")):
        (tmp_path / name).mkdir()
        run_batch(
            ruleset,
            example_run_options(
                tmp_path / name,
                roster=tmp_path / roster,
                performance=tmp_path / "performance.csv",
            ),
        )
    decided = (tmp_path / "parquet" / "out" / "decisions.jsonl").read_text()
    assert '"partner_id":"1001"' in decided
    assert decided == (tmp_path / "csv" / "out" / "decisions.jsonl").read_text()


def test_a_parquet_file_missing_a_column_or_a_dataset_of_mixed_files_stops(tmp_path, ruleset):
    table = _table(EXAMPLES / "roster.csv")
    short = tmp_path / "short.parquet"
    pq.write_table(table.drop(["joined_on"]), short)
    with pytest.raises(DataError, match="lacks 1 column the rules read: joined_on"):
        run_batch(ruleset, example_run_options(tmp_path, roster=short))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(table.slice(0, 5), mixed / "a.parquet")
    pq.write_table(table.slice(5).drop(["country"]), mixed / "b.parquet")
    with pytest.raises(DataError, match="its columns differ from those of"):
        run_batch(ruleset, example_run_options(tmp_path, roster=mixed))


def _tree(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_parquet_chunks_sent_as_columns_decide_and_write_letters_as_csv_rows_do(tmp_path, ruleset):
    """A Parquet roster's chunks travel as columns and become records in the
    workers: with an empty row, a row without partner_id, an id to trim, a duplicate, small
    chunks and two workers, every output and letter is as from the same rows
    in CSV, and the rows set aside have the same numbers."""
    from conftest import ROOT
    from engine.run.driver import RunLetters

    with (EXAMPLES / "roster.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    nameless = ["", *body[2][1:]]  # no partner_id, other values
    body[9] = [f" {body[9][0]} ", *body[9][1:]]  # an id to trim: read as the others are
    body = body[:4] + [[""] * len(header)] + body[4:7] + [nameless] + body[7:] + [body[1]]
    roster_csv = tmp_path / "roster.csv"
    with roster_csv.open("w", newline="", encoding="utf-8") as handle:  # empty row: blank line
        csv.writer(handle).writerows([header, *(row if any(row) else [] for row in body)])
    table = pa.table(
        {name: pa.array([row[i] or None for row in body]) for i, name in enumerate(header)}
    )
    roster_parquet = tmp_path / "roster.parquet"
    pq.write_table(table, roster_parquet, row_group_size=6)
    letters = RunLetters(ROOT / "templates", ("text", "html"))
    outputs = {}
    for kind, roster in (("csv", roster_csv), ("parquet", roster_parquet)):
        folder = tmp_path / kind
        run_batch(
            ruleset,
            example_run_options(
                folder, roster=roster, workers=2, chunk_size=4, letters=letters, max_rejects=0.5
            ),
        )
        outputs[kind] = folder
    for name in SAME:
        parquet = (outputs["parquet"] / "out" / name).read_bytes()
        assert parquet == (outputs["csv"] / "out" / name).read_bytes(), name
    rejected = _rejects(outputs["parquet"])
    assert rejected == _rejects(outputs["csv"])
    # numbered past the empty row
    assert ("10", "", "partner_id", "partner_id is missing") in rejected
    assert any(r[0] == str(len(body) + 1) and r[3].startswith("duplicate") for r in rejected)
    letters_of = {kind: _tree(folder / "out" / "letters") for kind, folder in outputs.items()}
    assert letters_of["parquet"] == letters_of["csv"] and len(letters_of["csv"]) > 40


def test_history_in_the_order_of_a_parquet_roster_is_merged_as_with_csv(tmp_path, ruleset):
    """A CSV history in the roster's order is read alongside a Parquet
    roster (its ids read from the columns), with unknown partners, a
    repeated and a missing partner_id, as alongside the CSV roster."""
    with (EXAMPLES / "roster.csv").open(newline="", encoding="utf-8") as handle:
        header, *body = list(csv.reader(handle))
    body.insert(3, list(body[2]))  # a repeated partner_id
    body.insert(5, [" ", *body[5][1:]])  # no partner_id
    with (EXAMPLES / "performance.csv").open(newline="", encoding="utf-8") as handle:
        figures, *history = list(csv.reader(handle))
    history = sorted((r for r in history if r[0] != "P-1004"), key=lambda r: r[0])
    history.insert(0, ["Z-0", "2026Q1", "1", "1", "1"])  # unknown, before everyone
    history.append(["A-0", "2026Q2", "1", "1", "1"])  # unknown, after everyone
    roster_csv, performance = tmp_path / "roster.csv", tmp_path / "performance.csv"
    for path, rows in ((roster_csv, [header, *body]), (performance, [figures, *history])):
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
    roster_parquet = tmp_path / "roster.parquet"
    table = pa.table({n: pa.array([r[i] or None for r in body]) for i, n in enumerate(header)})
    pq.write_table(table, roster_parquet)
    found = {}
    for kind, roster in (("csv", roster_csv), ("parquet", roster_parquet)):
        result = run_batch(
            ruleset,
            example_run_options(
                tmp_path / kind, roster=roster, performance=performance, max_rejects=0.5
            ),
        )
        assert result.summary["run"]["history_join"] == "merged"
        found[kind] = tmp_path / kind
    for name in SAME:
        assert (found["parquet"] / "out" / name).read_bytes() == (
            found["csv"] / "out" / name
        ).read_bytes(), name
    rejected = _rejects(found["parquet"])
    assert rejected == _rejects(found["csv"])
    assert [r[1] for r in rejected if r[3].startswith("no partner")] == ["Z-0", "P-1099", "A-0"]


def test_columns_of_a_parquet_file_are_read_as_its_records_say(tmp_path):
    """read_columns (the history's staging and order check) takes a Parquet
    file's columns a batch at a time: the rows and values its records have,
    an empty row skipped, a row with only other columns filled kept."""
    from engine.data.readers import RowReader, read_columns

    table = pa.table(
        {
            "partner_id": ["P-1", None, None, "P-2", "P-3"],
            "quarter": ["2026Q1", None, None, "2026Q2", None],
            "revenue": [10, None, None, 20, 30],
            "note": ["a", None, "only this", None, ""],
        }
    )
    path = tmp_path / "history.parquet"
    pq.write_table(table, path, row_group_size=2)
    wanted = ["partner_id", "quarter", "revenue", "absent"]
    records = [
        (row.row, tuple(row.record.get(c) for c in wanted)) for row in RowReader(path, wanted)
    ]
    assert (
        list(read_columns(path, wanted))
        == records
        == [
            (2, ("P-1", "2026Q1", 10, None)),
            (4, (None, None, None, None)),
            (5, ("P-2", "2026Q2", 20, None)),
            (6, ("P-3", None, 30, None)),
        ]
    )


def test_a_parquet_file_with_two_columns_of_one_name_is_read_by_position(tmp_path):
    """Columns are picked by position when the file repeats a name the rules
    do not read (two "note" columns), so no value moves to another column."""
    from engine.data.readers import RowReader

    table = pa.Table.from_arrays(
        [pa.array(["P-1", "P-2"]), pa.array(["a", "b"]), pa.array(["c", None]), pa.array([1, 2])],
        names=["partner_id", "note", "note", "staff_sales"],
    )
    path = tmp_path / "roster.parquet"
    pq.write_table(table, path)
    reader = RowReader(path, ["staff_sales"])
    [batch] = reader.parquet_batches(10)
    assert batch.names == ("partner_id", "note", "note", "staff_sales")
    assert list(batch.rows()) == [("P-1", "a", "c", 1), ("P-2", "b", None, 2)]
    [ids] = reader.parquet_batches(10, only=["partner_id"])
    assert ids.names == ("partner_id",) and ids.column("partner_id") == ["P-1", "P-2"]


def test_a_what_if_over_a_parquet_roster_finds_what_it_finds_over_csv(tmp_path, ruleset):
    """diff decides each chunk twice (both rule sets): a Parquet chunk's
    columns make the same records both times."""
    from conftest import ROOT
    from engine.ruleset.loader import load_rules
    from engine.run.impact import compare

    proposed_folder = tmp_path / "proposed"
    proposed_folder.mkdir()
    for path in (ROOT / "rules").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        (proposed_folder / path.name).write_text(
            text.replace("certified_technical >= 2", "certified_technical >= 3"), encoding="utf-8"
        )
    proposed = load_rules(proposed_folder)
    roster = tmp_path / "roster.parquet"
    pq.write_table(_table(EXAMPLES / "roster.csv"), roster, row_group_size=9)
    day = example_run_options(tmp_path).as_of
    found = {}
    for kind, path in (("csv", EXAMPLES / "roster.csv"), ("parquet", roster)):
        impact = compare(
            ruleset, proposed, path, EXAMPLES / "performance.csv", day, day, "a", "b", 2
        )
        found[kind] = (impact.partners, impact.counts, impact.moves)
    assert found["parquet"] == found["csv"] and found["csv"][2]
