"""Load a rules folder into a validated :class:`~engine.ruleset.model.RuleSet`.

Every ``*.yaml`` file directly in the folder is read (``tests/`` holds rule
tests, not rules). Each file is a mapping of sections; a section may be
split over several files. All problems are collected and raised together
as one :class:`~engine.errors.RuleSetError`, each with file, line, and column.
Checks of meaning (names, types, reachability, cycles) live in
:mod:`engine.ruleset.semantics`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Any

from engine.errors import Problem, RuleSetError, UsageError
from engine.ruleset import semantics
from engine.ruleset.conditions import parse_condition, unknown_key_message
from engine.ruleset.expressions import ParseError, parse_expression
from engine.ruleset.memory import Keeping, Period
from engine.ruleset.model import (
    ENGAGEMENT,
    NO_ENGAGEMENT,
    EngagementModel,
    FieldDef,
    Parameter,
    Program,
    Row,
    RuleSet,
    Table,
)
from engine.ruleset.value_types import (
    BOOL,
    CHOICE,
    DATE,
    INTEGER,
    LIST,
    MONEY,
    NUMBER,
    PERCENT,
    TEXT,
    TYPE_NAMES,
    ValueType,
    finer_than_kept,
    parse_value,
)
from engine.ruleset.yaml_source import Loc, YList, YMap, load_yaml

SECTIONS = (
    "ruleset",
    "fields",
    "history",
    "parameters",
    "metrics",
    "classifications",
    "engagement",
    "programs",
)
MERGED_SECTIONS = ("fields", "history", "parameters", "metrics", "classifications", "programs")
RULESET_KEYS = ("name", "description", "currency", "max_rejects", "max_moves")
DEFAULT_MAX_REJECTS = 0.05  # of a roster's rows; more stops a run (see engine.run.driver)
DEFAULT_MAX_MOVES = 0.20  # of the partners decided; more moving holds a run's letters
FIELD_KEYS = (
    "type",
    "required",
    "default",
    "label",
    "description",
    "values",
    "column",
    "aliases",
    "may_be_absent",
    "min",
    "max",
    "actionable",
    "scale",
)
SCALES = ("points", "fraction")  # how a percentage without a % sign reads
PARAMETER_KEYS = ("value", "description")
METRIC_KEYS = ("value", "label", "description")
TABLE_KEYS = ("label", "description", "rows", "default", "default_note", "order")
ENGAGEMENT_KEYS = TABLE_KEYS + ("models",)
ROW_KEYS = ("value", "when", "note")
MODEL_KEYS = ("name", "description", "resources")
PROGRAM_KEYS = (
    "name",
    "description",
    "when",
    "group",
    "priority",
    "starts",
    "ends",
    "requires",
    "benefits",
    "grace",
    "protection",
    "renewal",
)
RENEWAL_KEYS = ("every", "window")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED = {
    "partner_id",
    "as_of",
    ENGAGEMENT,
    "and",
    "or",
    "not",
    "in",
    "contains",
    "between",
    "is",
    "missing",
    "yes",
    "no",
    "true",
    "false",
    "all",
    "any",
}


def load_rules(folder: str | Path) -> RuleSet:
    """Load and validate a rules folder; raises RuleSetError listing every problem."""
    return _RuleLoader(Path(folder)).load()


class _RuleLoader:
    def __init__(self, folder: Path):
        self.folder = folder
        self.problems: list[Problem] = []
        # Names declared anywhere, even if their definition is broken, and
        # whether any file was unreadable: both keep one mistake from being
        # reported again at every place that uses the name.
        self.declared: set[str] = set()
        self.unreadable = False
        self.stray_keys = False  # a file had keys that are no section (see load)

    def problem(self, loc: Loc, message: str) -> None:
        self.problems.append(loc.problem(message))

    # --- reading files -----------------------------------------------------

    def load(self) -> RuleSet:
        if not self.folder.is_dir():  # a usage mistake (exit 2), not a broken rule set
            raise UsageError(
                f"{self.folder}: no such rules folder; give the folder that holds the rule "
                "files (--rules, or rules in eligibility.toml)"
            )
        paths = sorted(
            p for p in self.folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
        )
        if not paths:
            raise RuleSetError(
                [Problem(str(self.folder), 1, 1, "no rule files (*.yaml) in this folder")]
            )
        digest = hashlib.sha256()
        sections: dict[str, list[tuple[YMap, Loc]]] = {s: [] for s in SECTIONS}
        written = False  # whether any file holds anything
        for path in paths:
            data, problems = load_yaml(path, str(path), self.folder)
            written = written or data is not None
            if data is not None:
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
            self.problems.extend(problems)
            if data is None:
                self.unreadable = self.unreadable or bool(problems)
                continue
            if not isinstance(data, YMap):
                self.problems.append(
                    Problem(
                        str(path),
                        1,
                        1,
                        "a rule file must be a mapping of sections: " + ", ".join(SECTIONS),
                    )
                )
                continue
            stray = [key for key in data if key not in SECTIONS]
            if stray:  # one mistake (a section's line deleted, say): one error
                more = f" (and {len(stray) - 1} more after it)" if len(stray) > 1 else ""
                hint = (
                    "; is the 'engagement:' line above it missing?"
                    if stray[0] in ENGAGEMENT_KEYS
                    else ""
                )
                self.problem(
                    data.key_loc(stray[0]),
                    unknown_key_message(stray[0], SECTIONS, "a rule file") + more + hint,
                )
                self.stray_keys = True
            for key, value in data.items():
                if key not in SECTIONS:
                    continue
                if key != "ruleset" and key != ENGAGEMENT and not isinstance(value, YMap):
                    self.problem(
                        data.value_loc(key), f"'{key}' must be a mapping of names to definitions"
                    )
                    continue
                sections[key].append((value, data.key_loc(key)))
        if self.unreadable:  # what the other files say cannot be checked without it
            raise RuleSetError(self.problems)
        if not written:
            raise RuleSetError(
                [
                    Problem(
                        str(self.folder),
                        1,
                        1,
                        "every rule file in this folder is empty; a rule set needs at least "
                        "fields and programs (see docs/rule-authoring.md)",
                    )
                ]
            )
        ruleset = self._build(sections, digest.hexdigest()[:16], [str(p) for p in paths])
        if self.problems or ruleset is None:
            raise RuleSetError(self.problems)
        return ruleset

    def _merged(
        self, entries: list[tuple[YMap, Loc]], what: str
    ) -> list[tuple[str, Any, Loc, Loc]]:
        """(name, definition, name location, definition location), duplicates reported."""
        seen: dict[str, Loc] = {}
        merged = []
        for section, _ in entries:
            for name, definition in section.items():
                self.declared.add(name)
                loc = section.key_loc(name)
                if name in seen:
                    first = seen[name]
                    self.problem(
                        loc, f"{what} '{name}' is already defined at {first.file}:{first.line}"
                    )
                    continue
                seen[name] = loc
                if not NAME.match(name):
                    self.problem(
                        loc,
                        f"{what} name '{name}' must use lowercase letters, digits "
                        "and underscores, starting with a letter (like "
                        "certified_technical)",
                    )
                    continue
                if name in RESERVED:
                    suffix = {"classification": "level", "program": "program"}.get(what, "score")
                    self.problem(
                        loc,
                        f"'{name}' is a reserved word of the rule language; call the {what}, "
                        f"for example, {name}_{suffix}",
                    )
                    continue
                merged.append((name, definition, loc, section.value_loc(name)))
        return merged

    def _single(self, entries: list[tuple[Any, Loc]], what: str) -> tuple[Any, Loc] | None:
        if len(entries) > 1:
            first = entries[0][1]
            for _, loc in entries[1:]:
                self.problem(
                    loc, f"'{what}' is already defined at {first.file}:{first.line}; define it once"
                )
        return entries[0] if entries else None

    # --- small typed readers ------------------------------------------------

    def keys(
        self,
        data: Any,
        loc: Loc,
        allowed: tuple[str, ...],
        where: str,
        required: tuple[str, ...] = (),
    ) -> bool:
        if not isinstance(data, YMap):
            self.problem(loc, f"{where} must be a mapping with keys: {', '.join(allowed)}")
            return False
        for key in data:
            if key not in allowed:
                self.problem(data.key_loc(key), unknown_key_message(key, allowed, where))
        for key in required:
            if key not in data:
                self.problem(data.loc, f"{where} needs '{key}'")
        return True

    def text(self, data: YMap, key: str, where: str, default: str = "") -> str:
        value = data.get(key, default)
        if value is None:
            return default
        if isinstance(value, (YMap, YList, bool)):
            self.problem(data.value_loc(key), f"'{key}' of {where} must be text")
            return default
        return str(value).strip()

    def date(self, data: YMap, key: str, where: str) -> dt.date | None:
        if key not in data or data[key] is None:
            return None
        value = data[key]
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        self.problem(
            data.value_loc(key),
            f"'{key}' of {where} must be a date written as YYYY-MM-DD, "
            f"like 2027-01-01 (found '{value}')",
        )
        return None

    def plain_mapping(self, data: YMap, key: str, where: str) -> dict:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, YMap):
            self.problem(
                data.value_loc(key), f"'{key}' of {where} must be a mapping of names to values"
            )
            return {}
        result = {}
        for name, item in value.items():
            if isinstance(item, YMap):
                self.problem(
                    value.value_loc(name),
                    f"'{name}' in '{key}' of {where} must be a value or a list of values",
                )
                continue
            result[name] = list(item) if isinstance(item, YList) else item
        return result

    # --- sections -------------------------------------------------------------

    def _build(self, sections, fingerprint: str, files: list[str]) -> RuleSet | None:
        header = self._single(sections["ruleset"], "ruleset")
        name, description, currency = self.folder.resolve().name, "", "USD"
        max_rejects, max_moves = DEFAULT_MAX_REJECTS, DEFAULT_MAX_MOVES
        if header:
            data, loc = header
            if self.keys(data, loc, RULESET_KEYS, "ruleset"):
                name = self.text(data, "name", "ruleset", name)
                description = self.text(data, "description", "ruleset")
                currency = self.text(data, "currency", "ruleset", "USD").upper()
                if not re.match(r"^[A-Z]{3}$", currency):
                    self.problem(
                        data.value_loc("currency"),
                        "currency must be a three-letter ISO code such as USD or EUR",
                    )
                max_rejects = self._share(data, "max_rejects", DEFAULT_MAX_REJECTS)
                max_moves = self._share(data, "max_moves", DEFAULT_MAX_MOVES)
        fields = self._fields(self._merged(sections["fields"], "field"), "field")
        figures = self._fields(
            self._merged(sections["history"], "history figure"), "history figure"
        )
        parameters = self._parameters(self._merged(sections["parameters"], "parameter"))
        metric_defs = self._metric_defs(self._merged(sections["metrics"], "metric"))
        tables = [
            self._table(name, data, loc, vloc, "classification", TABLE_KEYS)
            for name, data, loc, vloc in self._merged(sections["classifications"], "classification")
        ]
        tables = [t for t in tables if t is not None]
        engagement_entry = self._single(sections[ENGAGEMENT], ENGAGEMENT)
        engagement, models = self._engagement(engagement_entry)
        programs = [
            self._program(*entry) for entry in self._merged(sections["programs"], "program")
        ]
        programs = [p for p in programs if p is not None]

        checker = semantics.Checks(
            self.problems,
            fields,
            figures,
            parameters,
            metric_defs,
            tables,
            engagement,
            models,
            programs,
            quiet_names=None if self.unreadable else self.declared,
        )
        return checker.run(
            lambda **kw: RuleSet(
                name=name,
                description=description,
                currency=currency,
                max_rejects=max_rejects,
                max_moves=max_moves,
                folder=str(self.folder),
                fingerprint=fingerprint,
                files=tuple(files),
                engagement_declared=engagement_entry is not None,
                **kw,
            )
        )

    def _share(self, data: YMap, key: str, default: float) -> float:
        """``max_rejects: 10%`` (the share of a roster's rows that may be
        rejected before a run stops) or ``max_moves: 20%`` (of the partners
        that may move before a run's letters are held); the run's options
        override them."""
        raw = data.get(key)
        if raw is None:
            return default
        try:
            value = parse_value(ValueType(PERCENT), raw)
        except ValueError:
            value = None
        if value is None or not 0 <= value <= 1:
            self.problem(
                data.value_loc(key), f"{key} must be a percentage from 0% to 100%, like 5%"
            )
            return default
        return value

    def _fields(self, entries, what: str) -> dict[str, FieldDef]:
        result = {}
        for name, data, loc, vloc in entries:
            if isinstance(data, str):  # shorthand: "name: integer"
                data = _shorthand(data, "type", vloc)
            where = f"{what} '{name}'"
            if not self.keys(data, vloc, FIELD_KEYS, where, required=("type",)):
                continue
            type_name = data.get("type")
            if type_name not in TYPE_NAMES:
                import difflib

                close = difflib.get_close_matches(str(type_name), TYPE_NAMES, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                if "type" in data:
                    self.problem(
                        data.value_loc("type"),
                        f"unknown type '{type_name}' for {where} (types: "
                        f"{', '.join(TYPE_NAMES)}){hint}",
                    )
                continue
            values = data.get("values")
            if type_name == CHOICE and not values:
                self.problem(
                    data.loc, f"{where} is 'one of' and needs 'values', the list of allowed values"
                )
                continue
            if values is not None:
                if type_name not in (CHOICE, LIST):
                    self.problem(
                        data.key_loc("values"),
                        "'values' only applies to 'one of' and 'list of text' fields",
                    )
                    values = None
                elif not isinstance(values, YList) or not all(
                    isinstance(v, str) and v.strip() for v in values
                ):
                    self.problem(
                        data.value_loc("values"),
                        "'values' must be a list of text values, like [smb, mid_market]",
                    )
                    values = None
                else:
                    values = tuple(str(v).strip() for v in values)
            scale = self._scale(data, where, type_name)
            vtype = ValueType(type_name, values, scale == "fraction")
            required = data.get("required", False)
            if not isinstance(required, bool):
                self.problem(data.value_loc("required"), "'required' must be true or false")
                required = False
            default = None
            if data.get("default") is not None:
                raw = data["default"]
                if isinstance(raw, YList):
                    raw = list(raw)
                try:
                    default = parse_value(vtype, raw)
                    finer = finer_than_kept(vtype.kind, raw)
                    if finer:
                        raise ValueError(finer)
                except ValueError as error:
                    default = None
                    self.problem(data.value_loc("default"), f"default of {where}: {error}")
                if required:
                    self.problem(
                        data.key_loc("default"),
                        f"{where} is required, so a default would never be used; remove one",
                    )
            elif vtype.kind == LIST and not required:
                default = ()
            label = self.text(data, "label", where, name.replace("_", " "))
            low, high = self._range(data, where, vtype)
            if (
                default is not None
                and vtype.kind != LIST
                and ((low is not None and default < low) or (high is not None and default > high))
            ):
                self.problem(
                    data.value_loc("default"),
                    f"the default of {where} is outside its range (min and max; counts are "
                    "at least 0 and shares 0% to 100% unless min or max says otherwise)",
                )
            result[name] = FieldDef(
                name,
                vtype,
                required,
                default,
                label,
                self.text(data, "description", where),
                loc,
                self._column_names(data, where),
                self._may_be_absent(data, where, required),
                low,
                high,
                self._flag(data, "actionable", where, True),
                scale,
            )
        return result

    def _scale(self, data: YMap, where: str, type_name: str) -> str:
        """``scale:`` of a percentage: how a value without a % sign reads."""
        scale = data.get("scale")
        if scale is None:
            return ""
        if type_name != PERCENT:
            self.problem(data.key_loc("scale"), f"'scale' applies to percentages, not to {where}")
            return ""
        if scale not in SCALES:
            self.problem(
                data.value_loc("scale"),
                f"'scale' of {where} must be points (60 is 60%) or fraction (0.6 is 60%)",
            )
            return ""
        return str(scale)

    def _range(self, data: YMap, where: str, vtype: ValueType) -> tuple[Any, Any]:
        """``min:`` and ``max:`` in the field's type; by default a count
        (integer) is at least 0 and a share (percentage) from 0% to 100%."""
        default = {INTEGER: (0, None), PERCENT: (0.0, 1.0)}.get(vtype.kind, (None, None))
        bounds = []
        for key, fallback in zip(("min", "max"), default):
            if key not in data:
                bounds.append(fallback)
                continue
            raw = data[key]
            value = None
            if vtype.kind in (INTEGER, NUMBER, MONEY, PERCENT, DATE) and raw is not None:
                try:
                    value = parse_value(vtype, raw)
                except ValueError:
                    value = None
                finer = finer_than_kept(vtype.kind, raw)
                if value is not None and finer:
                    self.problem(data.value_loc(key), f"'{key}' of {where}: {finer}")
                    bounds.append(None)
                    continue
            if value is None:
                self.problem(
                    data.value_loc(key),
                    f"'{key}' of {where} must be a {vtype.describe()}"
                    if vtype.kind in (INTEGER, NUMBER, MONEY, PERCENT, DATE)
                    else f"'{key}' applies to numbers, money, percentages and dates, "
                    f"not to {where}",
                )
            bounds.append(value)
        low, high = bounds
        if low is not None and high is not None and low > high:
            self.problem(data.key_loc("max"), f"'max' of {where} is below its 'min'")
        return low, high

    def _column_names(self, data: YMap, where: str) -> tuple[str, ...]:
        """``column:`` (the export's header for the field) and ``aliases:``."""
        names = []
        column = data.get("column")
        if column is not None:
            if isinstance(column, str) and column.strip():
                names.append(column.strip())
            else:
                self.problem(
                    data.value_loc("column"),
                    f"'column' of {where} must be the header the export gives it, like "
                    "'Certified Technical Staff'",
                )
        aliases = data.get("aliases")
        if aliases is not None:
            if isinstance(aliases, YList) and all(
                isinstance(a, str) and a.strip() for a in aliases
            ):
                names += [str(a).strip() for a in aliases]
            else:
                self.problem(
                    data.value_loc("aliases"),
                    f"'aliases' of {where} must be a list of headers, like [Joined, Start Date]",
                )
        return tuple(names)

    def _flag(self, data: YMap, key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.problem(data.value_loc(key), f"'{key}' of {where} must be true or false")
            return default
        return value

    def _may_be_absent(self, data: YMap, where: str, required: bool) -> bool:
        value = data.get("may_be_absent", False)
        if not isinstance(value, bool):
            self.problem(data.value_loc("may_be_absent"), "'may_be_absent' must be true or false")
            return False
        if value and required:
            self.problem(
                data.key_loc("may_be_absent"),
                f"{where} is required, so its column cannot be absent; remove one",
            )
            return False
        return value

    def _parameters(self, entries) -> dict[str, Parameter]:
        result = {}
        for name, data, loc, vloc in entries:
            description = ""
            value, value_loc = data, vloc
            if isinstance(data, YMap):
                if not self.keys(data, vloc, PARAMETER_KEYS, f"parameter '{name}'", ("value",)):
                    continue
                value, value_loc = data.get("value"), data.value_loc("value")
                description = self.text(data, "description", f"parameter '{name}'")
            vtype, parsed = _infer_parameter(value)
            finer = "" if vtype is None else finer_than_kept(vtype.kind, value)
            if finer:
                self.problem(value_loc, f"parameter '{name}': {finer}")
                continue
            if vtype is None:
                self.problem(
                    value_loc,
                    f"parameter '{name}' must be a number, a percentage "
                    "(90%), money ($1,000), a date, text, or a list of text",
                )
                continue
            result[name] = Parameter(name, vtype, parsed, description, loc)
        return result

    def _metric_defs(self, entries) -> list[tuple[str, Any, str, str, Loc, Loc]]:
        """(name, parsed expression, source, label, description, loc) per metric."""
        result = []
        for name, data, loc, vloc in entries:
            if isinstance(data, str):
                data = _shorthand(data, "value", vloc)
            where = f"metric '{name}'"
            if not self.keys(data, vloc, METRIC_KEYS, where, ("value",)) or "value" not in data:
                continue
            source, sloc = data["value"], data.value_loc("value")
            if isinstance(source, (int, float)) and not isinstance(source, bool):
                source = str(source)
            if not isinstance(source, str):
                self.problem(
                    sloc,
                    f"the value of {where} must be an expression, like "
                    "'min(4 * certified_technical, 20)'",
                )
                continue
            try:
                expr = parse_expression(source)
            except ParseError as error:
                self.problem(sloc.at(error.offset), f"in {where}: {error.message}")
                continue
            result.append(
                (
                    name,
                    expr,
                    source,
                    self.text(data, "label", where, name.replace("_", " ")),
                    self.text(data, "description", where),
                    loc,
                    sloc,
                )
            )
        return result

    def _table(
        self, name: str, data: Any, loc: Loc, vloc: Loc, what: str, allowed: tuple[str, ...]
    ) -> Table | None:
        if what == "classification" and self._misplaced_key(name, loc, allowed, what):
            return None
        where = f"{what} '{name}'"
        if not self.keys(data, vloc, allowed, where):
            return None
        ok = True
        if "default" not in data or data.get("default") in (None, ""):
            self.problem(
                data.loc,
                f"{where} has no default; add 'default:' with the value "
                "for partners no row matches",
            )
            ok = False
        rows_data = data.get("rows")
        if not isinstance(rows_data, YList) or not rows_data:
            self.problem(
                data.value_loc("rows") if "rows" in data else data.loc,
                f"{where} needs 'rows', a list of rows with 'value' and 'when'",
            )
            return None
        rows = []
        for index, row in enumerate(rows_data):
            rloc = rows_data.item_loc(index)
            row_where = f"row {index + 1} of {where}"
            if not self.keys(row, rloc, ROW_KEYS, row_where, ("value", "when")):
                ok = False
                continue
            if "value" not in row or "when" not in row:
                ok = False
                continue
            value = row["value"]
            if not isinstance(value, str) or not NAME.match(value):
                self.problem(
                    row.value_loc("value"),
                    f"the value of {row_where} must be a lowercase name like at_risk",
                )
                ok = False
                continue
            when = parse_condition(row["when"], row.value_loc("when"), self.problems)
            if when is None:
                ok = False
                continue
            rows.append(Row(value, when, self.text(row, "note", row_where), rloc))
        default = data.get("default")
        if default is not None and (not isinstance(default, str) or not NAME.match(default)):
            self.problem(
                data.value_loc("default"),
                f"the default of {where} must be a lowercase name like standard",
            )
            ok = False
        if not ok:
            return None
        table = Table(
            name,
            self.text(data, "label", where, name.replace("_", " ")),
            self.text(data, "description", where),
            tuple(rows),
            default,
            self.text(data, "default_note", where),
            loc,
        )
        order = data.get("order")
        if order is not None:
            if not isinstance(order, YList) or sorted(map(str, order)) != sorted(table.values):
                self.problem(
                    data.value_loc("order"),
                    f"'order' of {where} must list each of its values once, lowest "
                    f"first: {', '.join(table.values)}",
                )
            else:
                table = Table(
                    *[
                        getattr(table, f)
                        for f in (
                            "name",
                            "label",
                            "description",
                            "rows",
                            "default",
                            "default_note",
                            "loc",
                        )
                    ],
                    order=tuple(order),
                )
        return table

    def _engagement(self, entry) -> tuple[Table | None, dict[str, EngagementModel]]:
        if entry is None:  # optional: one implicit model, which outputs do not show
            if self.stray_keys:  # its keys may be there, under no section: said already
                return None, {}
            loc = Loc(str(self.folder), 1, 1)
            table = Table(ENGAGEMENT, "engagement model", "", (), NO_ENGAGEMENT, "", loc)
            return table, {NO_ENGAGEMENT: EngagementModel(NO_ENGAGEMENT, "Standard", "", {}, loc)}
        data, loc = entry
        table = self._table(ENGAGEMENT, data, loc, loc, "the engagement section", ENGAGEMENT_KEYS)
        models: dict[str, EngagementModel] = {}
        if not isinstance(data, YMap):
            return table, models
        models_data = data.get("models")
        if not isinstance(models_data, YMap) or not models_data:
            self.problem(
                data.value_loc("models") if "models" in data else data.loc,
                "the engagement section needs 'models': each engagement model with "
                "its name, description, and resources",
            )
            return table, models
        for model_id, model in models_data.items():
            mloc = models_data.key_loc(model_id)
            where = f"engagement model '{model_id}'"
            if not self.keys(model, models_data.value_loc(model_id), MODEL_KEYS, where, ("name",)):
                continue
            models[model_id] = EngagementModel(
                model_id,
                self.text(model, "name", where, model_id),
                self.text(model, "description", where),
                self.plain_mapping(model, "resources", where),
                mloc,
            )
        return table, models

    def _misplaced_key(self, name: str, loc: Loc, keys: tuple[str, ...], what: str) -> bool:
        """A key of an entry (``benefits:``, ``rows:``) indented as far as the
        entries' names, so that it reads as an entry of its own: said once,
        at the key, instead of the errors of a {what} named like that."""
        if name not in keys:
            return False
        self.problem(
            loc,
            f"'{name}' is indented like a {what}'s name, but it is a key of a {what}: "
            f"indent it under the {what} above it, as far as that {what}'s other keys",
        )
        return True

    def _program(self, pid: str, data: Any, loc: Loc, vloc: Loc) -> Program | None:
        if self._misplaced_key(pid, loc, PROGRAM_KEYS, "program"):
            return None
        where = f"program '{pid}'"
        if not self.keys(data, vloc, PROGRAM_KEYS, where, ("name",)):
            return None
        when = None
        if "when" in data:
            when = parse_condition(data["when"], data.value_loc("when"), self.problems)
            if when is None:
                return None
        group = data.get("group")
        if group is not None and (not isinstance(group, str) or not NAME.match(group)):
            self.problem(
                data.value_loc("group"), f"the group of {where} must be a lowercase name like tier"
            )
            group = None
        priority = data.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            self.problem(
                data.value_loc("priority"),
                f"the priority of {where} must be a whole number (higher wins within a group)",
            )
            priority = 0
        elif group is not None and "priority" not in data:
            self.problem(
                data.loc,
                f"{where} is in group '{group}' and needs a 'priority' "
                "(higher wins within the group)",
            )
        elif group is None and "priority" in data and "group" not in data:
            self.problem(
                data.value_loc("priority"),
                f"{where} has a priority but no group: a priority only ranks the programs "
                "of an exclusive group; add 'group: NAME' or remove the priority",
            )
        starts, ends = self.date(data, "starts", where), self.date(data, "ends", where)
        if starts and ends and ends < starts:
            self.problem(
                data.value_loc("ends"), f"{where} ends ({ends}) before it starts ({starts})"
            )
        requires = data.get("requires", [])
        if isinstance(requires, str):
            requires = [requires]
        if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
            self.problem(
                data.value_loc("requires"), f"'requires' of {where} must be a list of program ids"
            )
            requires = []
        return Program(
            pid,
            self.text(data, "name", where, pid),
            self.text(data, "description", where),
            when,
            group,
            priority,
            starts,
            ends,
            tuple(requires),
            self.plain_mapping(data, "benefits", where),
            loc,
            self._keeping(data, where, when),
        )

    def _keeping(self, data: YMap, where: str, when) -> Keeping | None:
        """A program's ``grace:``, ``protection:`` and ``renewal:`` (see
        engine.ruleset.memory), or None when it has none."""
        found = {key: data[key] for key in ("grace", "protection", "renewal") if key in data}
        if not found:
            return None
        if "when" not in data:
            self.problem(
                data.key_loc(next(iter(found))),
                f"{where} has no conditions, so every partner always qualifies and "
                f"'{next(iter(found))}' would never keep anyone: remove it, or add 'when:'",
            )
            return None
        periods: dict[str, Period | None] = {}
        for key in ("grace", "protection"):
            if key in found:
                periods[key] = self._period(
                    found[key], data.value_loc(key), f"the {key} of {where}"
                )
        every = window = None
        if "renewal" in found:
            renewal = found["renewal"]
            rloc = data.value_loc("renewal")
            if isinstance(renewal, YMap):
                checked = self.keys(
                    renewal, rloc, RENEWAL_KEYS, f"the renewal of {where}", ("every",)
                )
                if checked and "every" in renewal:
                    every = self._period(
                        renewal["every"], renewal.value_loc("every"), f"the renewal of {where}"
                    )
                    if "window" in renewal:
                        window = self._period(
                            renewal["window"],
                            renewal.value_loc("window"),
                            f"the renewal window of {where}",
                        )
            else:
                every = self._period(renewal, rloc, f"the renewal of {where}")
        return Keeping(periods.get("grace"), periods.get("protection"), every, window)

    def _period(self, value: Any, loc: Loc, what: str) -> Period | None:
        try:
            return Period.parse(value)
        except ValueError as error:
            self.problem(loc, f"{what}: {error}")
            return None


def _shorthand(value: str, key: str, loc: Loc) -> YMap:
    data = YMap({key: value})
    data.loc, data.key_locs, data.value_locs = loc, {key: loc}, {key: loc}
    return data


def _infer_parameter(value: Any) -> tuple[ValueType | None, Any]:
    if isinstance(value, YList):
        if all(isinstance(v, str) for v in value):
            return ValueType(LIST), tuple(v.strip() for v in value)
        return None, None
    if isinstance(value, bool):
        return ValueType(BOOL), value
    if isinstance(value, (int, float)):
        return ValueType(NUMBER), float(value)
    if isinstance(value, dt.date):
        return ValueType(DATE), value
    if isinstance(value, str):
        text = value.strip()
        for kind in (PERCENT, MONEY):
            if (kind == PERCENT and text.endswith("%")) or (kind == MONEY and text.startswith("$")):
                try:
                    return ValueType(kind), parse_value(ValueType(kind), text)
                except ValueError:
                    return None, None
        return ValueType(TEXT), text
    return None, None
