"""An output folder: a folder per run, and the current run switched in one step.

``DIR`` (``--out``) holds::

    runs/<started>-run<id>/     one complete run each: decisions.jsonl,
                                enrollments.csv, rejects.csv, changes.csv,
                                summary.json, letters/, report.html
    runs/.<name>.partial/       a run being written
    current -> runs/<name>      the current run
    decisions.jsonl -> current/decisions.jsonl   (and the other names above)
    stopped-run/rejects.csv     the rejects of the last run that stopped on them
    .eligibility-output         says that this program writes here
    .lock                       held while a run writes here (engine.data.locks)

A run writes everything, letters and report included, into its own new
folder; only once that is complete is the folder renamed into ``runs/``,
recorded in the run history, and made current by replacing the ``current``
link with one rename. Whenever the process dies, ``current`` names either
the previous complete run or the new complete one, and the links in ``DIR``
(``DIR/decisions.jsonl``, ``DIR/letters/``) go through it, so scripts that
read them keep working and never see two runs mixed. Commands that read a
run resolve ``current`` once (:func:`current_run`) and read only that folder.

What a killed run left is tidied by the next one (:meth:`OutputFolder.recover`):
partial folders are deleted, and a complete folder that the run history
recorded but that never became current (killed between the two steps) is
made current. POSIX symbolic links are used; on Windows they need Developer
Mode or administrator rights.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from engine.data.locks import held
from engine.errors import UsageError

MARKER = ".eligibility-output"
LOCK_FILE = ".lock"
RUNS = "runs"
CURRENT = "current"
STOPPED = "stopped-run"  # rejects.csv of a run that stopped on its rejects (--strict)
SUMMARY = "summary.json"
PUBLISHED = (
    "decisions.jsonl",
    "enrollments.csv",
    "rejects.csv",
    "changes.csv",
    SUMMARY,
    "letters",
    "report.html",
)
KEPT_RUNS = 3  # run folders an output folder keeps: the current one and two before it
_PARTIAL = ".partial"
_EARLIER = "00000000T000000-earlier"  # outputs of the layout before run folders
_OURS = frozenset({MARKER, LOCK_FILE, RUNS, CURRENT, STOPPED, *PUBLISHED})


def current_run(folder: Path) -> Path:
    """The run folder that commands reading ``folder`` read: the current run of
    an output folder, or ``folder`` itself when it is a run's folder."""
    link = folder / CURRENT
    if link.is_symlink():
        try:
            return link.resolve(strict=True)
        except OSError:
            raise UsageError(
                f"{folder}: its current run ({os.readlink(link)}) is missing; run again"
            ) from None
    if (folder / SUMMARY).is_file():
        return folder
    raise UsageError(
        f"{folder}: no run there (no current run, no summary.json); give the --out folder of a run"
    )


class OutputFolder:
    """``DIR``: see the module docstring."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.runs = self.path / RUNS

    @classmethod
    def of_run(cls, run_folder: Path) -> OutputFolder:
        """The output folder a run folder belongs to (``DIR/runs/<name>`` -> ``DIR``),
        or the folder itself (a run written before run folders)."""
        parent = run_folder.resolve().parent
        if parent.name == RUNS and (parent.parent / MARKER).exists():
            return cls(parent.parent)
        return cls(run_folder)

    # --- owning and locking the folder ---------------------------------------------

    def claim(self, force: bool = False) -> None:
        """Make ``DIR`` an output folder: create it, or check that all it holds
        was written by this program. Files it did not write are left alone
        only with ``force``; outputs in the layout before run folders become
        the first run folder."""
        self.refuse_foreign(force)
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / MARKER).exists():
            return
        entries = sorted(self.path.iterdir())
        moved = [e for e in entries if e.name in PUBLISHED and not e.is_symlink()]
        if moved:
            target = self.runs / _EARLIER
            target.mkdir(parents=True, exist_ok=True)
            for entry in moved:
                os.replace(entry, target / entry.name)
            if _earlier_outputs(target) and not (self.path / CURRENT).is_symlink():
                self.switch(target)
        (self.path / MARKER).write_text(
            "Written by the eligibility program: each run in runs/, the current one "
            "linked as current.\n",
            encoding="utf-8",
        )

    def refuse_foreign(self, force: bool = False) -> None:
        """Stop, unless ``force``, when ``DIR`` holds files this program did not write."""
        if not self.path.is_dir() or (self.path / MARKER).exists():
            return
        entries = sorted(self.path.iterdir())
        earlier = _earlier_outputs(self.path)
        foreign = [
            e.name
            for e in entries
            if (not earlier if e.name in PUBLISHED else e.name not in _OURS)
            and not _old_temporary(e.name)
        ]
        if foreign and not force:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if foreign[3:] else ""
            )
            raise UsageError(
                f"{self.path} holds files this program did not write ({shown}); give a new "
                "or empty folder with --out, or add --force to write beside them (they are "
                "left as they are, and files there named like outputs are moved into "
                f"{self.path / RUNS / _EARLIER})"
            )

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a run (or a letters pass) writes here."""
        return held(
            self.path / LOCK_FILE,
            f"the output folder {self.path}",
            "wait for it to finish, or give another --out folder",
        )

    # --- a run's folder ------------------------------------------------------------

    def stage(self, run_id: int) -> tuple[Path, Path]:
        """A new, empty folder for a run to write into, and the name it will have
        once complete (:meth:`publish`)."""
        self.runs.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        name, number = f"{stamp}-run{run_id}", 1
        while (self.runs / name).exists() or (self.runs / f".{name}{_PARTIAL}").exists():
            number += 1
            name = f"{stamp}-run{run_id}-{number}"
        staging = self.runs / f".{name}{_PARTIAL}"
        staging.mkdir()
        return staging, self.runs / name

    def publish(self, staging: Path, final: Path) -> None:
        """A run's folder, complete, under its own name (not yet current)."""
        os.replace(staging, final)
        _sync_folder(self.runs)

    def switch(self, run_folder: Path) -> None:
        """Make ``run_folder`` the current run: one rename of the ``current`` link.
        Then the links in ``DIR`` are made to match what the run has."""
        temporary = self.path / f".{CURRENT}.{os.getpid()}{_PARTIAL}"
        temporary.unlink(missing_ok=True)
        os.symlink(os.path.relpath(run_folder, self.path), temporary, target_is_directory=True)
        os.replace(temporary, self.path / CURRENT)
        _sync_folder(self.path)
        self.link_outputs()

    def link_outputs(self) -> None:
        """``DIR/<name>`` -> ``current/<name>`` for each output the current run
        has; links to outputs it does not have are removed."""
        current = self.path / CURRENT
        for name in PUBLISHED:
            link = self.path / name
            if (current / name).exists():
                if not link.is_symlink() and not link.exists():
                    target = os.path.join(CURRENT, name)
                    os.symlink(target, link, target_is_directory=(current / name).is_dir())
            elif link.is_symlink():
                link.unlink()

    def current(self) -> Path | None:
        link = self.path / CURRENT
        return link.resolve() if link.is_symlink() and link.exists() else None

    def run_folders(self) -> list[Path]:
        """The complete run folders, oldest first (their names start with the
        time); not the one holding what was here before run folders, which is
        never deleted."""
        if not self.runs.is_dir():
            return []
        return sorted(
            p
            for p in self.runs.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name != _EARLIER
        )

    # --- tidying -----------------------------------------------------------------

    def recover(self, recorded: Callable[[Path], bool]) -> Path | None:
        """Tidy what a killed run left (call it holding the lock): partial
        folders are deleted; of the complete folders newer than the current
        run, the newest the run history recorded (``recorded``) becomes
        current, and the others, never recorded, are deleted. Returns the
        folder made current, if any."""
        for path in self.runs.glob(f".*{_PARTIAL}") if self.runs.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True)
        for path in [p for p in self.path.iterdir() if _old_temporary(p.name)]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        current = self.current()
        newer = [p for p in self.run_folders() if current is None or p.name > current.name]
        switched = None
        for path in reversed(newer):
            if switched is None and recorded(path):
                self.switch(path)
                switched = path
            elif switched is None or path.name > switched.name:
                shutil.rmtree(path, ignore_errors=True)
        return switched

    def prune(self, keep: int = KEPT_RUNS) -> list[Path]:
        """Delete all but the newest ``keep`` run folders (never the current one)."""
        current = self.current()
        folders = self.run_folders()
        doomed = [p for p in folders[: max(len(folders) - keep, 0)] if p != current]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
        return doomed


def remove_run_folder(run_folder: Path) -> bool:
    """Delete a run's folder (its run was pruned from the history), unless it
    is the current run of its output folder or not a run folder of ours."""
    folder = Path(run_folder)
    outputs = OutputFolder.of_run(folder)
    if outputs.path == folder or not folder.is_dir() or outputs.current() == folder.resolve():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _earlier_outputs(path: Path) -> bool:
    """Whether ``path`` holds a run's outputs in the layout before run folders
    (its summary.json names a run)."""
    summary = path / SUMMARY
    if summary.is_symlink() or not summary.is_file():
        return False
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
        return isinstance(data, dict) and "rule_set" in data and "run" in data
    except (OSError, ValueError):
        return False


def _old_temporary(name: str) -> bool:
    """A temporary name in ``DIR`` (deleted by recover): the ``current`` link
    being made, or what a killed run of the layout before run folders left."""
    return name.startswith(".") and name.endswith((_PARTIAL, ".stale", ".old"))


def _sync_folder(path: Path) -> None:
    """Make a rename in ``path`` durable (a power cut after it keeps it)."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
