"""The project config: which rules, templates, roster, history, database and
output folder a project uses, so that every command works from any folder
inside the project.

It is ``eligibility.toml`` at the project's root, or a ``[tool.eligibility]``
table in its ``pyproject.toml``: the first of them found in the current
folder or a folder above it. Paths in it are relative to the file's folder.
An environment variable ``ELIGIBILITY_<KEY>`` (``ELIGIBILITY_ROSTER``,
``ELIGIBILITY_DB``, ...) overrides a key, its paths relative to the current
folder; a command-line option overrides both. Secrets never go in the file:
the mail server's user and password come from the environment only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE = "eligibility.toml"
ENV_PREFIX = "ELIGIBILITY_"
PATHS = ("rules", "templates", "roster", "performance", "enrollments", "db", "out")
# key -> the types its value may have
KEYS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(PATHS, (str,)),
    "max_rejects": (str, int, float),
    "max_moves": (str, int, float),
    "workers": (int,),
    "smtp": (str,),
    "starttls": (bool,),
    "ssl": (bool,),
    "per_minute": (int, float),
}
_PERCENTS = ("max_rejects", "max_moves")  # shares: "2%" or 2, as the options take them
_SECRETS = ("password", "smtp_password", "user", "smtp_user")


@dataclass(frozen=True)
class Project:
    """The settings found (key -> value, paths made absolute) and where from."""

    file: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)


def load_project(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Project:
    """The project config for commands run in ``start`` (default: the current
    folder), with the environment's overrides (see the module docstring)."""
    start = (start or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    file, table = _find(start)
    values: dict[str, Any] = {}
    if file is not None:
        for key, value in table.items():
            if key in _SECRETS:
                raise UsageError(
                    f"{file}: '{key}' does not belong in the project config, where anyone "
                    "who reads the project sees it; set ELIGIBILITY_SMTP_USER and "
                    "ELIGIBILITY_SMTP_PASSWORD in the environment instead"
                )
            if key not in KEYS:
                raise UsageError(
                    f"{file}: unknown key '{key}' (known: {', '.join(KEYS)}); see "
                    "docs/batch-runs.md"
                )
            if not isinstance(value, KEYS[key]) or (
                isinstance(value, bool) and bool not in KEYS[key]
            ):
                kinds = " or ".join(_KIND[t] for t in KEYS[key])
                raise UsageError(f"{file}: '{key}' must be {kinds}, not {value!r}")
            if key in PATHS:
                value = _shown(file.parent / value, start)
            elif key in _PERCENTS:
                value = _percent(file, key, value)
            values[key] = value
    for key in KEYS:
        raw = environ.get(ENV_PREFIX + key.upper())
        if raw:
            if key in _PERCENTS:
                values[key] = _percent(f"{ENV_PREFIX}{key.upper()}", key, raw)
            else:
                values[key] = raw if key in PATHS else _from_text(key, raw)
    return Project(file, values)


def _percent(where: object, key: str, value: Any) -> float:
    """A share for --max-rejects / --max-moves: ``"2%"`` or ``2`` (percent)."""
    text = str(value).strip()
    try:
        number = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 100:
        raise UsageError(f"{where}: '{key}' must be a percentage like 2%, not {value!r}")
    return number


def _shown(path: Path, start: Path) -> str:
    """A path from the config as messages show it: relative to the current
    folder when inside it (``out``), else absolute."""
    try:
        return str(path.relative_to(start)) or "."
    except ValueError:
        return str(path)


_KIND = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def _find(start: Path) -> tuple[Path | None, dict]:
    for folder in (start, *start.parents):
        config = folder / CONFIG_FILE
        if config.is_file():
            return config, _read(config)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _read(pyproject).get("tool", {}).get("eligibility")
            if isinstance(table, dict):
                return pyproject, table
    return None, {}


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot read the project config ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from None


def _from_text(key: str, raw: str) -> Any:
    """An environment variable's text as the key's type."""
    kinds = KEYS[key]
    if bool in kinds:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise UsageError(f"{ENV_PREFIX}{key.upper()}={raw!r}: write true or false")
    if int in kinds and str not in kinds:
        try:
            return int(raw) if float not in kinds else float(raw)
        except ValueError:
            raise UsageError(f"{ENV_PREFIX}{key.upper()}={raw!r}: write a number") from None
    return raw
