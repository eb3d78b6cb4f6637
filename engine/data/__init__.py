"""Partner data in and run results out: files and databases.

Roster and history readers (CSV, JSON Lines, .xlsx) with row numbers, the
join of performance history to roster partners, rejected rows, output files
written atomically, a folder per run switched in as a whole, the locks that
keep one writer at a time, and the run history in SQLite.
"""

from engine.data.outputs import AtomicFile, CsvOutput, remove_stale_partials
from engine.data.performance import HistoryStore
from engine.data.readers import (
    RowReader,
    SourceRow,
    file_fingerprint,
    find_partner,
    partner_from_json_file,
    read_columns,
    read_rows,
)
from engine.data.rejects import Reject
from engine.data.run_folders import OutputFolder, current_run
from engine.data.run_history import DEFAULT_DB, RunHistory, RunRecord

__all__ = [
    "AtomicFile",
    "CsvOutput",
    "DEFAULT_DB",
    "HistoryStore",
    "OutputFolder",
    "Reject",
    "RowReader",
    "RunHistory",
    "RunRecord",
    "SourceRow",
    "current_run",
    "file_fingerprint",
    "find_partner",
    "partner_from_json_file",
    "read_columns",
    "read_rows",
    "remove_stale_partials",
]
