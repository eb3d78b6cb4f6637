"""Batch work over a roster: runs, the letters pass, what-if comparisons.

:func:`run_batch` decides a whole roster in worker processes and records
the run; :func:`decide_chunk` is its pure unit of work, which also writes
each partner's letter when the run asks for letters (``RunOptions.letters``).
:func:`write_letters` writes the letters again from a finished run, and
:func:`send_letters` sends them by email.
:func:`compare` decides a roster under two rule sets or dates and lists who
moves, and why.
"""

from engine.run.chunks import ChunkResult, ChunkRows, decide_chunk
from engine.run.driver import (
    OUTPUT_FILES,
    Progress,
    RunLetters,
    RunOptions,
    RunResult,
    run_batch,
)
from engine.run.impact import Impact, compare, load_rule_sets, write_moves_csv
from engine.run.letters_pass import LetterOptions, write_letters
from engine.run.sending import SendOptions, SendReport, send_letters

__all__ = [
    "ChunkResult",
    "ChunkRows",
    "Impact",
    "LetterOptions",
    "OUTPUT_FILES",
    "Progress",
    "RunLetters",
    "RunOptions",
    "RunResult",
    "SendOptions",
    "SendReport",
    "compare",
    "decide_chunk",
    "load_rule_sets",
    "run_batch",
    "send_letters",
    "write_letters",
    "write_moves_csv",
]
