"""One exception hierarchy for the whole library.

The CLI catches :class:`EligibilityError` and prints its message; anything else
escaping is a bug in this program, not bad input.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a rule set, located in a file."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = (
            f"{self.file}:{self.line}:{self.column}" if self.column else f"{self.file}:{self.line}"
        )  # column 0: not known (template errors)
        return f"{where}: {self.message}"


class EligibilityError(Exception):
    """Base class of every error this library raises on purpose."""

    exit_code = 1


class RuleSetError(EligibilityError):
    """A rule set has one or more problems; all are listed."""

    def __init__(self, problems: Iterable[Problem], where: str = "the rule set"):
        self.problems = sorted(set(problems))
        count = len(self.problems)
        header = f"{count} problem{'s' if count != 1 else ''} in {where}"
        super().__init__("\n".join([header] + [str(p) for p in self.problems]))


class DataError(EligibilityError):
    """Partner data (a roster row, a JSON file, a history row) is unusable."""


class EngineError(EligibilityError):
    """durable_rules misbehaved: it raised, lost a decision, or fired twice.

    This is never the user's fault; the message says what the engine did.
    """


class BusyError(EligibilityError):
    """Another run is writing to the same output folder or run history."""


class InputError(EligibilityError):
    """Something named on the command line (a git revision, a folder) cannot be used."""


class DeliveryError(EligibilityError):
    """The mail server cannot be reached, refuses the login, or went away."""


class UsageError(EligibilityError):
    """The command was asked for something that does not exist."""

    exit_code = 2
