"""The history of runs, in an embedded SQLite database.

Every run is recorded with its as-of date, the fingerprints of its rules and
inputs, its counts, and every partner's decisions. A run is written in one
transaction: a run killed half way leaves no trace, and the database stays
consistent. The next run of the same rule set (by name) over the same roster
file compares its decisions with the last recorded run to list what changed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.data.locks import held
from engine.errors import DataError, UsageError
from engine.evaluate.changes import Snapshot
from engine.ruleset.memory import Recalled

DEFAULT_DB = "eligibility-history.sqlite"
SCHEMA_VERSION = 2  # 2: decisions.kept (the programs memory kept a partner in)
LOCK_TIMEOUT_SECONDS = 30.0  # how long a run waits for another run's write to finish

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    as_of TEXT NOT NULL,
    ruleset_name TEXT NOT NULL,
    rules_fingerprint TEXT NOT NULL,
    roster_source TEXT NOT NULL,
    roster_fingerprint TEXT NOT NULL,
    performance_source TEXT,
    performance_fingerprint TEXT,
    rows_read INTEGER NOT NULL,
    decided INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    output_folder TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_source ON runs (ruleset_name, roster_source, id);
CREATE TABLE IF NOT EXISTS decisions (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    partner_id TEXT NOT NULL,
    classifications TEXT NOT NULL,
    engagement TEXT NOT NULL,
    programs TEXT NOT NULL,
    kept TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, partner_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_by_rule_set ON runs (ruleset_name, as_of, id);
CREATE TABLE IF NOT EXISTS sends (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    partner_id TEXT NOT NULL,
    address TEXT NOT NULL,
    test INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_by_message ON sends (message_id);
"""

# What became of a letter handed to a mail server (the sends table's outcome).
SENDING = "sending"  # recorded before the message; left so, if the send died meanwhile
SENT = "sent"  # the server accepted it
REFUSED = "refused"  # a permanent failure (5xx): not tried again for this address
DEFERRED = "deferred"  # temporary failures (4xx) until the retries ran out: tried again
SUPPRESSED = "suppressed"  # on the suppression list: not sent


@dataclass(frozen=True)
class RunRecord:
    id: int
    started_at: str
    finished_at: str
    as_of: str
    ruleset_name: str
    rules_fingerprint: str
    roster_source: str
    roster_fingerprint: str
    performance_source: str | None
    performance_fingerprint: str | None
    rows_read: int
    decided: int
    rejected: int
    output_folder: str
    summary: dict


def decision_row(partner_id: str, snapshot: Snapshot) -> tuple:
    """A partner's decision as the run history stores it, run id aside:
    (partner id, classifications, engagement model, programs, kept)."""
    return (
        partner_id,
        orjson.dumps(snapshot.classifications, option=orjson.OPT_SORT_KEYS).decode(),
        snapshot.engagement,
        orjson.dumps(snapshot.programs).decode(),
        orjson.dumps(snapshot.kept).decode() if snapshot.kept else "{}",
    )


class RunHistory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=LOCK_TIMEOUT_SECONDS
            )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as error:
            raise DataError(f"{self.path}: not a usable run-history database ({error})") from None
        if found is None:
            self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(found[0]) > SCHEMA_VERSION:
            raise DataError(f"{self.path} was written by a newer version of this program")
        elif int(found[0]) < SCHEMA_VERSION:
            self._upgrade(int(found[0]))
        self._open_run: int | None = None

    def _upgrade(self, version: int) -> None:
        """Bring a history written by an earlier version up to this one, in
        one transaction. Version 1 had no ``kept`` column: memory kept nobody
        then, so every program recorded was qualified for ('{}')."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
            if "kept" not in columns:
                self._db.execute("ALTER TABLE decisions ADD COLUMN kept TEXT NOT NULL DEFAULT '{}'")
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),)
            )
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            self.abort()
            raise DataError(
                f"{self.path}: could not bring the run history from version {version} "
                f"to {SCHEMA_VERSION} ({error}); nothing was changed"
            ) from None

    # --- recording a run -------------------------------------------------------

    def begin(self) -> None:
        """Start the run's transaction; one run at a time writes to a history."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise DataError(
                f"{self.path}: the run history is busy ({error}); another run "
                "may be using it, so wait for it or give --db another file"
            ) from None

    def add_decisions(self, run_id: int, rows: Iterable[tuple[str, Snapshot]]) -> None:
        self.add_decision_rows(run_id, (decision_row(pid, s) for pid, s in rows))

    def add_decision_rows(self, run_id: int, rows: Iterable[tuple]) -> None:
        """Decisions as :func:`decision_row` makes them (a run's workers do)."""
        self._db.executemany(
            "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)", ((run_id, *row) for row in rows)
        )

    def next_run_id(self) -> int:
        last = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()[0]
        last_decided = self._db.execute(
            "SELECT COALESCE(MAX(run_id), 0) FROM decisions"
        ).fetchone()[0]
        return max(last, last_decided) + 1

    def finish(self, record: RunRecord) -> None:
        self._db.execute(
            "INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.id,
                record.started_at,
                record.finished_at,
                record.as_of,
                record.ruleset_name,
                record.rules_fingerprint,
                record.roster_source,
                record.roster_fingerprint,
                record.performance_source,
                record.performance_fingerprint,
                record.rows_read,
                record.decided,
                record.rejected,
                record.output_folder,
                json.dumps(record.summary),
            ),
        )
        self._db.execute("COMMIT")

    def update_summary(self, run_id: int, summary: dict) -> None:
        """A recorded run's summary, changed since (a held run released)."""
        self._db.execute("UPDATE runs SET summary = ? WHERE id = ?", (json.dumps(summary), run_id))

    def abort(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # --- reading -------------------------------------------------------------------

    def previous_run(self, ruleset_name: str, roster_source: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT * FROM runs WHERE ruleset_name = ? AND roster_source = ? "
            "ORDER BY id DESC LIMIT 1",
            (ruleset_name, roster_source),
        ).fetchone()
        return _record(row) if row else None

    def snapshots(self, run_id: int, partner_ids: list[str]) -> dict[str, Snapshot]:
        return {
            pid: _snapshot(*decided)
            for pid, *decided in self._for_partners(
                "SELECT partner_id, classifications, engagement, programs, kept FROM decisions "
                "WHERE run_id = ? AND partner_id IN ({})",
                [run_id],
                partner_ids,
            )
        }

    def last_decided(
        self, ruleset_name: str, roster_source: str, partner_ids: list[str], before_run: int
    ) -> dict[str, tuple[int, Snapshot]]:
        """For partners not in run ``before_run``: the last earlier run of the
        same rule set over the same roster that decided each (its id and the
        partner's decisions then). Partners never decided are left out."""
        return {
            pid: (run_id, _snapshot(*decided))
            for pid, run_id, *decided in self._for_partners(
                "SELECT d.partner_id, d.run_id, d.classifications, d.engagement, d.programs, "
                "d.kept FROM runs r JOIN decisions d ON d.run_id = r.id "
                "WHERE r.ruleset_name = ? AND r.roster_source = ? AND r.id < ? "
                "AND d.partner_id IN ({}) ORDER BY d.run_id",
                [ruleset_name, roster_source, before_run],
                partner_ids,
            )
        }

    def recalled(
        self, ruleset_name: str, as_of: str, partner_ids: list[str]
    ) -> dict[str, list[Recalled]]:
        """What earlier runs of a rule set (by name) with an as-of date before
        ``as_of`` decided for each partner: one entry per as-of date (the
        newest run of that date that decided the partner), oldest first.
        Partners no such run decided are left out (engine.ruleset.memory)."""
        found: dict[str, dict[str, Recalled]] = {}
        for pid, day, classifications, programs, kept in self._for_partners(
            "SELECT d.partner_id, r.as_of, d.classifications, d.programs, d.kept "
            "FROM runs r JOIN decisions d ON d.run_id = r.id "
            "WHERE r.ruleset_name = ? AND r.as_of < ? AND d.partner_id IN ({}) "
            "ORDER BY r.as_of, r.id",
            [ruleset_name, as_of],
            partner_ids,
        ):
            found.setdefault(pid, {})[day] = Recalled(
                dt.date.fromisoformat(day),
                frozenset(json.loads(programs)),
                frozenset(json.loads(kept)),
                json.loads(classifications),
            )
        return {pid: list(days.values()) for pid, days in found.items()}

    def _for_partners(
        self, query: str, parameters: list, partner_ids: list[str]
    ) -> Iterator[tuple]:
        """The rows of ``query`` (its ``{}`` the partner ids' placeholders), in
        batches of ids below SQLite's limit on query parameters."""
        for start in range(0, len(partner_ids), 900):
            part = partner_ids[start : start + 900]
            yield from self._db.execute(
                query.format(",".join("?" * len(part))), [*parameters, *part]
            )

    def removed(self, previous_id: int, run_id: int) -> Iterator[str]:
        """Partners decided in the previous run but not in this one."""
        for (pid,) in self._db.execute(
            "SELECT partner_id FROM decisions d WHERE run_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM decisions e WHERE e.run_id = ? AND e.partner_id = d.partner_id) "
            "ORDER BY partner_id",
            (previous_id, run_id),
        ):
            yield pid

    def prune(self, keep: int) -> tuple[list[int], int]:
        """Delete all but the newest ``keep`` runs of each rule set (by name)
        over each roster, with their decisions, and give the space back.
        Returns the ids deleted and how many partner decisions went with
        them. A partner missing from every run kept is new again when it
        comes back (see :meth:`last_decided`)."""
        self.begin()
        try:
            doomed = self.prunable(keep)
            decisions = 0
            for run_id in doomed:
                decisions += self._db.execute(
                    "DELETE FROM decisions WHERE run_id = ?", (run_id,)
                ).rowcount
                self._db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            self._db.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        if doomed:
            self._db.execute("VACUUM")
        return doomed, decisions

    def prunable(self, keep: int) -> list[int]:
        """The runs :meth:`prune` would delete: all but the newest ``keep`` of
        each rule set (by name) over each roster."""
        return [
            run_id
            for (run_id,) in self._db.execute(
                "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY ruleset_name, "
                "roster_source ORDER BY id DESC) AS newest FROM runs) WHERE newest > ? "
                "ORDER BY id",
                (keep,),
            )
        ]

    def records_folder(self, run_folder: Path) -> bool:
        """Whether a run's folder is the output folder of the run its summary names."""
        try:
            summary = json.loads((run_folder / "summary.json").read_text(encoding="utf-8"))
            run_id = int(summary["run"]["id"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        row = self._db.execute("SELECT output_folder FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is not None and Path(row[0]) == run_folder.resolve()

    def runs(self) -> list[RunRecord]:
        return [_record(r) for r in self._db.execute("SELECT * FROM runs ORDER BY id")]

    def run(self, run_id: int) -> RunRecord:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id} in {self.path}; 'eligibility history' lists them")
        return _record(row)

    # --- letters sent (engine.run.sending) --------------------------------------

    def send_log(self, message_ids: Iterable[str]) -> dict[str, list[tuple]]:
        """Earlier sends to partners (not to a test mailbox) of these messages:
        Message-ID -> [(outcome, address, detail, started_at, digest)], oldest first."""
        ids = list(message_ids)
        log: dict[str, list[tuple]] = {}
        for message, *rest in self._for_partners(
            "SELECT message_id, outcome, address, detail, started_at, digest FROM sends "
            "WHERE test = 0 AND message_id IN ({}) ORDER BY id",
            [],
            ids,
        ):
            log.setdefault(message, []).append(tuple(rest))
        return log

    def start_send(
        self,
        message_id: str,
        run_id: int,
        partner_id: str,
        address: str,
        test: bool,
        at: str,
        digest: str,
    ) -> int:
        """Record a message about to be handed to the server (committed before
        it is: see engine.run.sending); returns the record's id. ``digest``
        identifies the message's bytes."""
        cursor = self._db.execute(
            "INSERT INTO sends (message_id, run_id, partner_id, address, test, started_at, "
            "outcome, detail, digest) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)",
            (message_id, run_id, partner_id, address, int(test), at, SENDING, digest),
        )
        return cursor.lastrowid

    def finish_send(self, send_id: int, outcome: str, detail: str, at: str) -> None:
        self._db.execute(
            "UPDATE sends SET outcome = ?, detail = ?, finished_at = ? WHERE id = ?",
            (outcome, detail, at, send_id),
        )

    def record_send(
        self,
        message_id: str,
        run_id: int,
        partner_id: str,
        address: str,
        outcome: str,
        detail: str,
        at: str,
    ) -> None:
        """A letter not handed to a server at all (suppressed)."""
        self._db.execute(
            "INSERT INTO sends (message_id, run_id, partner_id, address, test, started_at, "
            "finished_at, outcome, detail, digest) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, '')",
            (message_id, run_id, partner_id, address, at, at, outcome, detail),
        )

    def sends_of_run(self, run_id: int) -> dict[str, int]:
        """How the letters of a run were sent to partners: outcome -> letters
        (each letter counted once, by its last send)."""
        return dict(
            self._db.execute(
                "SELECT outcome, COUNT(*) FROM sends s WHERE run_id = ? AND test = 0 AND "
                "id = (SELECT MAX(id) FROM sends t WHERE t.message_id = s.message_id "
                "AND t.test = 0) GROUP BY outcome ORDER BY outcome",
                (run_id,),
            )
        )

    def close(self) -> None:
        self.abort()
        self._db.close()


def lock_history(path: Path) -> contextlib.AbstractContextManager[None]:
    """The lock of the run history at ``path`` (a file beside it, ``.lock``
    added), held by a run from before it reads the previous run until it is
    recorded, and by pruning: one writer at a time (see engine.data.locks)."""
    return held(
        path.with_name(path.name + ".lock"),
        f"the run history {path}",
        "wait for it to finish, or give another --db",
    )


def _snapshot(classifications: str, engagement: str, programs: str, kept: str) -> Snapshot:
    return Snapshot(
        json.loads(classifications), engagement, tuple(json.loads(programs)), json.loads(kept)
    )


def _record(row: tuple) -> RunRecord:
    return RunRecord(*row[:-1], summary=json.loads(row[-1]))
