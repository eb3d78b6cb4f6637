"""Metrics: values derived from fields, parameters, and history.

This module type-checks metric expressions (so ``money + percent`` is
caught while validating) and evaluates them for one partner. Both
directions use one table of built-in functions, :data:`FUNCTIONS`.

Missing values propagate: an operation with a missing operand is missing,
and division by zero is missing (a partner with no target has no attainment).

Arithmetic is exact decimal arithmetic, as a manager's calculator and a
spreadsheet do it, not binary floating point: each number a metric reads
(a field, a figure, a literal, an earlier metric) becomes a
:class:`~decimal.Decimal` of the value as written (0.7 is 7/10, not the
nearest binary fraction), sums, products and differences are exact, and
division keeps 28 significant digits. So ``round(0.7 * score, 1)`` with
score 3.5 is 2.5, as 0.7 x 3.5 = 2.45 rounds half away from zero, and the
order in which quarters are added changes nothing. The result goes back on
the grid all values live on (money to cents, others to 6 decimals), rounded
half away from zero, so that a threshold of 90% is met by exactly 90%
attainment; values on that grid compare exactly in the explainer and, as
whole millionths, in durable_rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

from engine.ruleset.expressions import Binary, Call, Expr, Literal, Name, ParseError, Unary
from engine.ruleset.memory import EMPTY as EMPTY_MEMORY, Memory, quarters_before
from engine.ruleset.quarters import History, Quarter, last_complete_quarter, window
from engine.ruleset.value_types import (
    BOOL,
    DATE,
    INTEGER,
    LIST,
    MAX_MAGNITUDE,
    MONEY,
    NUMBER,
    PERCENT,
    TEXT,
    ValueType,
    canonical,
)

T_INT, T_NUM, T_MONEY, T_PCT = (
    ValueType(INTEGER),
    ValueType(NUMBER),
    ValueType(MONEY),
    ValueType(PERCENT),
)
T_BOOL, T_TEXT, T_DATE, T_LIST = ValueType(BOOL), ValueType(TEXT), ValueType(DATE), ValueType(LIST)
LITERAL_TYPES = {
    "number": T_NUM,
    "percent": T_PCT,
    "money": T_MONEY,
    "date": T_DATE,
    "text": T_TEXT,
    "yes/no": T_BOOL,
}
MAX_QUARTERS = 40


@dataclass(frozen=True)
class Env:
    """What an expression can see while it is evaluated for one partner."""

    values: Mapping[str, Any]
    history: History
    as_of: dt.date
    # The last quarter whose figures count (see quarters.figures_through);
    # None: the last complete quarter on the as-of date.
    through: Quarter | None = None
    # Sums of a figure over quarters, found once per partner: attainment,
    # total and growth often add up the same quarters of revenue.
    sums: dict = field(default_factory=dict, compare=False)
    # What the partner held in earlier runs (engine.ruleset.memory).
    memory: Memory = EMPTY_MEMORY

    @property
    def last_quarter(self) -> Quarter:
        return self.through or last_complete_quarter(self.as_of)


@dataclass(frozen=True)
class Function:
    """A built-in: ``check`` types the call (raising ParseError), ``run`` evaluates it."""

    usage: str
    check: Callable[[Call, Checker], ValueType]
    run: Callable[[Call, Env, Callable], Any]


class Checker:
    """Infers the type of an expression; ``resolve`` maps a name to its type."""

    def __init__(
        self,
        resolve: Callable[[Name], ValueType],
        figure_type: Callable[[Name], ValueType],
        recall: Callable[[Name], tuple[str, ...] | None] | None = None,
    ):
        self.resolve = resolve
        self.figure_type = figure_type
        # A name memory functions may recall: None for a program, a
        # classification's values for one; raises ParseError for anything else.
        self.recall = recall

    def type_of(self, expr: Expr) -> ValueType:
        if isinstance(expr, Literal):
            return LITERAL_TYPES[expr.kind]
        if isinstance(expr, Name):
            return self.resolve(expr)
        if isinstance(expr, Unary):
            inner = self.type_of(expr.operand)
            if expr.op == "not":
                _require(inner.kind == BOOL, expr, "'not' needs a yes/no value")
                return T_BOOL
            _require(inner.is_numeric, expr, f"cannot negate a {inner.describe()}")
            return inner
        if isinstance(expr, Binary):
            return self._binary(expr)
        if isinstance(expr, Call):
            function = FUNCTIONS.get(expr.function)
            if function is None:
                import difflib

                close = difflib.get_close_matches(expr.function, FUNCTIONS, n=1)
                hint = (
                    f"; did you mean '{close[0]}'?"
                    if close
                    else f" (functions: {', '.join(sorted(FUNCTIONS))})"
                )
                raise ParseError(f"unknown function '{expr.function}'{hint}", expr.offset)
            return function.check(expr, self)
        raise AssertionError(expr)  # pragma: no cover

    def _binary(self, expr: Binary) -> ValueType:
        left, right = self.type_of(expr.left), self.type_of(expr.right)
        op = expr.op
        if op in ("and", "or"):
            _require(left.kind == BOOL and right.kind == BOOL, expr, f"'{op}' joins yes/no values")
            return T_BOOL
        if op in ("==", "!=", "<", "<=", ">", ">="):
            _require(
                comparable(left, right),
                expr,
                f"cannot compare a {left.describe()} with a {right.describe()}",
            )
            if op not in ("==", "!="):
                _require(
                    left.is_numeric or left.kind == DATE,
                    expr,
                    f"'{op}' needs numbers or dates, not a {left.describe()}",
                )
            return T_BOOL
        if op == "/" and isinstance(expr.right, Literal) and expr.right.value == 0:
            raise ParseError(
                "divides by zero, so the metric would always be missing; divide by a "
                "figure or a number other than 0",
                expr.right.offset,
            )
        result = arithmetic_type(op, left, right)
        _require(
            result is not None,
            expr,
            f"cannot use '{op}' between a {left.describe()} and a {right.describe()}",
        )
        return result


def _require(ok: bool, expr: Expr, message: str) -> None:
    if not ok:
        raise ParseError(message, expr.offset)


def comparable(a: ValueType, b: ValueType) -> bool:
    if a.is_numeric and b.is_numeric:
        return a.family == b.family or NUMBER in (a.family, b.family)
    return a.family == b.family


def arithmetic_type(op: str, a: ValueType, b: ValueType) -> ValueType | None:
    if not (a.is_numeric and b.is_numeric):
        return None
    fa, fb = a.family, b.family
    if op in ("+", "-"):
        if a.kind == b.kind == INTEGER:
            return T_INT
        if fa == fb:
            return ValueType(fa)
        return ValueType(fb) if fa == NUMBER else ValueType(fa) if fb == NUMBER else None
    if op == "*":
        if a.kind == b.kind == INTEGER:
            return T_INT
        kinds = sorted((fa, fb))
        if kinds == [MONEY, MONEY]:
            return None
        for kind in (MONEY, PERCENT):
            if kind in kinds:
                return ValueType(kind)
        return T_NUM
    if op == "/":
        if fa == fb:
            return T_NUM
        if fb in (NUMBER, PERCENT) and fa != NUMBER:
            return ValueType(fa)
        return T_NUM if fa == NUMBER and fb == NUMBER else None
    raise AssertionError(op)  # pragma: no cover


# --- evaluation ------------------------------------------------------------


def exact(value: Any) -> Any:
    """A number as the decimal it was written as: values are kept as floats on
    a six-decimal grid, and the shortest text of such a float is that decimal
    (for up to 15 significant digits, which MAX_MAGNITUDE and the grid allow).
    Whole numbers, and everything that is not a number, stay as they are.

    Values repeat across partners (shares, counts, thresholds, metric
    results), so conversions are remembered: a look-up costs a tenth of one."""
    if type(value) is float:
        found = _EXACT.get(value)
        if found is None:
            if len(_EXACT) >= _EXACT_SIZE:
                _EXACT.clear()
            found = _EXACT[value] = Decimal(repr(value))
        return found
    return value


_EXACT: dict[float, Decimal] = {}
_EXACT_SIZE = 4_096


def _divide(a: Any, b: Any) -> Any:
    return None if b == 0 else Decimal(a) / Decimal(b)


def evaluate(expr: Expr, env: Env) -> Any:
    if isinstance(expr, Literal):
        return exact(expr.value)
    if isinstance(expr, Name):
        return exact(env.values.get(expr.name))
    if isinstance(expr, Unary):
        value = evaluate(expr.operand, env)
        if value is None:
            return None
        return (not value) if expr.op == "not" else -value
    if isinstance(expr, Binary):
        if expr.op in ("and", "or"):
            left = evaluate(expr.left, env)
            right = evaluate(expr.right, env)
            if expr.op == "and":
                return (
                    False
                    if (left is False or right is False)
                    else (None if None in (left, right) else True)
                )
            return (
                True
                if (left is True or right is True)
                else (None if None in (left, right) else False)
            )
        left, right = evaluate(expr.left, env), evaluate(expr.right, env)
        if left is None or right is None:
            return None
        op = expr.op
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/":
            return _divide(left, right)
        return {
            "==": left == right,
            "!=": left != right,
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
        }[op]
    if isinstance(expr, Call):
        return FUNCTIONS[expr.function].run(expr, env, evaluate)
    raise AssertionError(expr)  # pragma: no cover


_ARITHMETIC = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def compile_expression(expr: Expr) -> Callable[[Env], Any]:
    """The expression as a Python closure with the meaning of :func:`evaluate`.

    The tree is walked once here instead of once per partner. Batch runs use
    this; the explainer uses :func:`evaluate`, so the two are checked against
    each other by the differential tests.
    """
    if isinstance(expr, Literal):
        value = exact(expr.value)
        return lambda env: value
    if isinstance(expr, Name):
        name = expr.name
        return lambda env: exact(env.values.get(name))
    if isinstance(expr, Unary):
        inner = compile_expression(expr.operand)
        if expr.op == "not":
            return lambda env: None if (v := inner(env)) is None else not v
        return lambda env: None if (v := inner(env)) is None else -v
    if isinstance(expr, Binary):
        left, right = compile_expression(expr.left), compile_expression(expr.right)
        if expr.op in ("and", "or"):
            return lambda env: evaluate(expr, env)
        apply = _ARITHMETIC[expr.op]

        def binary(env: Env) -> Any:
            a, b = left(env), right(env)
            return None if a is None or b is None else apply(a, b)

        return binary
    if isinstance(expr, Call):
        run = FUNCTIONS[expr.function].run
        # Arguments a function evaluates (min, max, overlap, ...) are compiled too.
        compiled = {id(arg): compile_expression(arg) for arg in expr.args}

        def argument(arg: Expr, env: Env) -> Any:
            return compiled[id(arg)](env)

        return lambda env: run(expr, env, argument)
    raise AssertionError(expr)  # pragma: no cover


_GRID = {MONEY: Decimal("0.01"), INTEGER: Decimal(1)}
_SIX_DECIMALS = Decimal("0.000001")
_MAX_DECIMAL = Decimal(int(MAX_MAGNITUDE))


def round_value(vtype: ValueType, value: Any) -> Any:
    """A metric result on the same grid as field values, rounded half away
    from zero; out-of-range is missing."""
    kind = vtype.kind
    if type(value) is Decimal:  # the common case first
        if not (abs(value) < _MAX_DECIMAL):
            return None
        value = value.quantize(_GRID.get(kind, _SIX_DECIMALS), ROUND_HALF_UP)
        return int(value) if kind == INTEGER else float(value) + 0.0
    if type(value) is int and kind == INTEGER:
        return value if abs(value) < MAX_MAGNITUDE else None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value != value or abs(value) >= MAX_MAGNITUDE)
    ):
        return None
    return canonical(kind, value)


# --- built-in functions ----------------------------------------------------


def _args(call: Call, count: int, usage: str) -> None:
    if len(call.args) != count:
        raise ParseError(
            f"{call.function} takes {count} argument{'s' * (count != 1)}: {usage}", call.offset
        )


def _quarters_arg(call: Call, index: int, usage: str) -> int:
    arg = call.args[index]
    ok = (
        isinstance(arg, Literal)
        and arg.kind == "number"
        and float(arg.value).is_integer()
        and 1 <= arg.value <= MAX_QUARTERS
    )
    if not ok:
        raise ParseError(
            f"the number of quarters must be a whole number from 1 to {MAX_QUARTERS}: {usage}",
            getattr(arg, "offset", call.offset),
        )
    return int(arg.value)


def _figure_arg(call: Call, checker: Checker, usage: str) -> ValueType:
    arg = call.args[0]
    if not isinstance(arg, Name):
        raise ParseError(
            f"the first argument must name a history figure: {usage}",
            getattr(arg, "offset", call.offset),
        )
    return checker.figure_type(arg)


def _figure_values(env: Env, figure: str, quarters: tuple) -> list:
    """The figure in each of the quarters that report it, most recent first,
    as kept (floats on the grid: see :func:`exact` and :func:`exact_sum`)."""
    found = env.history.quarters
    return [
        v for q in quarters if (r := found.get(q)) is not None and (v := r.get(figure)) is not None
    ]


def exact_sum(values: Sequence[Any]) -> Any:
    """``sum(exact(v) for v in values)``, the same value, without a Decimal
    per value: a float on the six-decimal grid below a billion is that many
    millionths exactly (``round(v * 1e6)``: its error is under 0.2 of one),
    so whole millionths are added as integers and one Decimal is made. Whole
    numbers stay whole; larger figures are converted one by one."""
    whole = millionths = 0
    others = []
    for value in values:
        kind = type(value)
        if kind is int:
            whole += value
        elif kind is float and -_MILLIONTHS_BELOW < value < _MILLIONTHS_BELOW:
            millionths += round(value * 1e6)
        else:
            others.append(exact(value))
    if not millionths and not others:
        return whole
    total = Decimal(millionths).scaleb(-6) + whole
    return total + sum(others) if others else total


_MILLIONTHS_BELOW = 1e9


def _sum_figure(env: Env, figure: str, quarters: tuple) -> Any:
    key = (figure, quarters)
    found = env.sums.get(key, _UNKNOWN)
    if found is _UNKNOWN:
        values = _figure_values(env, figure, quarters)
        found = env.sums[key] = exact_sum(values) if values else None
    return found


_UNKNOWN = object()


def _check_attainment(call, c):
    _args(call, 1, "attainment(4)")
    _quarters_arg(call, 0, "attainment(4)")
    c.figure_type(Name("revenue", call.offset))
    c.figure_type(Name("target", call.offset))
    return T_PCT


def _run_attainment(call, env, _):
    quarters = window(env.last_quarter, int(call.args[0].value))
    revenue, target = _sum_figure(env, "revenue", quarters), _sum_figure(env, "target", quarters)
    if revenue is None or not target:
        return None
    return _divide(revenue, target)


def _check_total(call, c, usage="total(revenue, 4)"):
    _args(call, 2, usage)
    figure = _figure_arg(call, c, usage)
    _quarters_arg(call, 1, usage)
    _require(figure.is_numeric, call, f"{call.args[0].name} is not a number")
    return figure


def _run_total(call, env, _):
    return _sum_figure(env, call.args[0].name, window(env.last_quarter, int(call.args[1].value)))


def _check_average(call, c):
    figure = _check_total(call, c, "average(revenue, 4)")
    return T_NUM if figure.kind == INTEGER else figure


def _run_average(call, env, _):
    quarters = window(env.last_quarter, int(call.args[1].value))
    values = _figure_values(env, call.args[0].name, quarters)
    return _divide(exact_sum(values), len(values)) if values else None


def _check_pick(call, c):
    """highest / lowest / first / last (revenue, 4): the figure's own type."""
    return _check_total(call, c, f"{call.function}(revenue, 4)")


def _run_pick(call, env, _):
    """Over the quarters of the window that have the figure (most recent
    first): the highest, the lowest, the earliest or the latest value."""
    quarters = window(env.last_quarter, int(call.args[1].value))
    values = _figure_values(env, call.args[0].name, quarters)
    if not values:
        return None
    function = call.function  # the grid's floats are in the order of their decimals
    if function == "highest":
        return exact(max(values))
    if function == "lowest":
        return exact(min(values))
    return exact(values[-1] if function == "first" else values[0])


def _check_if(call, c):
    if len(call.args) != 3:
        raise ParseError(
            "if takes a yes/no value and two values: if(certified_total >= 10, 2, 1)",
            call.offset,
        )
    condition, a, b = (c.type_of(arg) for arg in call.args)
    _require(
        condition.kind == BOOL, call.args[0], f"if needs yes/no first, not a {condition.describe()}"
    )
    if a.is_numeric and b.is_numeric:
        _require(
            comparable(a, b), call.args[2], f"if cannot mix a {a.describe()} with a {b.describe()}"
        )
        return b if a.family == NUMBER or (a.kind == INTEGER and b.kind != INTEGER) else a
    _require(
        a.family == b.family,
        call.args[2],
        f"if gives one type of value; not a {a.describe()} and a {b.describe()}",
    )
    return a


def _run_if(call, env, ev):
    """Only the value chosen is computed; a missing condition gives a missing value."""
    condition = ev(call.args[0], env)
    if condition is None:
        return None
    return ev(call.args[1] if condition else call.args[2], env)


def _check_growth(call, c):
    _check_total(call, c, "growth(revenue, 4)")
    return T_PCT


def _run_growth(call, env, _):
    n = int(call.args[1].value)
    recent = _sum_figure(env, call.args[0].name, window(env.last_quarter, n))
    before = _sum_figure(env, call.args[0].name, window(env.last_quarter, n, skip=n))
    if recent is None or before is None or before <= 0:
        return None
    return _divide(recent, before) - 1


def _check_below(call, c):
    _args(call, 0, "quarters_below_target()")
    c.figure_type(Name("revenue", call.offset))
    c.figure_type(Name("target", call.offset))
    return T_INT


def _run_below(call, env, _):
    count = 0
    quarter = env.last_quarter
    for _step in range(MAX_QUARTERS):
        row = env.history.figures(quarter)
        if not row or row.get("revenue") is None or row.get("target") is None:
            break
        if not row["revenue"] < row["target"]:
            break
        count += 1
        quarter = quarter.previous()
    return count


def _check_reported(call, c):
    _args(call, 1, "quarters_reported(4)")
    _quarters_arg(call, 0, "quarters_reported(4)")
    return T_INT


def _run_reported(call, env, _):
    quarters = window(env.last_quarter, int(call.args[0].value))
    return sum(1 for q in quarters if env.history.figures(q))


def _check_date_fn(call, c):
    _args(call, 1, f"{call.function}(joined_on)")
    arg_type = c.type_of(call.args[0])
    _require(
        arg_type.kind == DATE, call, f"{call.function} needs a date, not a {arg_type.describe()}"
    )
    return T_INT


def _run_days_since(call, env, ev):
    start = ev(call.args[0], env)
    return None if start is None else (env.as_of - start).days


def _run_quarters_since(call, env, ev):
    start = ev(call.args[0], env)
    return None if start is None else _months_between(start, env.as_of) // 3


def _check_overlap(call, c):
    _args(call, 2, "overlap(focus_verticals, priority_verticals)")
    for arg in call.args:
        _require(c.type_of(arg).kind == LIST, arg, "overlap compares two lists of text")
    return T_INT


def _run_overlap(call, env, ev):
    a, b = (ev(arg, env) for arg in call.args)
    if a is None or b is None:
        return None
    return len({x.casefold() for x in a} & {x.casefold() for x in b})


def _check_count(call, c):
    _args(call, 1, "count(focus_verticals)")
    _require(c.type_of(call.args[0]).kind == LIST, call, "count needs a list of text")
    return T_INT


def _run_count(call, env, ev):
    value = ev(call.args[0], env)
    return None if value is None else len(value)


def _check_minmax(call, c):
    if len(call.args) < 2:
        raise ParseError(
            f"{call.function} needs at least two values, like "
            f"{call.function}(4 * certified_technical, 20)",
            call.offset,
        )
    types = [c.type_of(arg) for arg in call.args]
    result = types[0]
    for arg, t in zip(call.args[1:], types[1:]):
        _require(
            comparable(result, t) and t.is_numeric,
            arg,
            f"{call.function} cannot mix a {result.describe()} with a {t.describe()}",
        )
        if result.family == NUMBER and t.family != NUMBER:
            result = t
        elif result.kind == INTEGER and t.kind != INTEGER:
            result = t
    return result


def _run_minmax(call, env, ev):
    values = [ev(arg, env) for arg in call.args]
    if any(v is None for v in values):
        return None
    return (min if call.function == "min" else max)(values)


def _check_round(call, c):
    if len(call.args) not in (1, 2):
        raise ParseError(
            f"{call.function} takes a value and optionally the number of decimals: "
            f"{call.function}(x) or {call.function}(x, 2)",
            call.offset,
        )
    t = c.type_of(call.args[0])
    _require(t.is_numeric, call, f"{call.function} needs a number, not a {t.describe()}")
    if len(call.args) == 2:
        _quarters_arg_like_digits(call)
        return t
    return T_INT if t.family == NUMBER else t


def _quarters_arg_like_digits(call: Call) -> None:
    arg = call.args[1]
    if not (
        isinstance(arg, Literal)
        and arg.kind == "number"
        and float(arg.value).is_integer()
        and 0 <= arg.value <= 6
    ):
        raise ParseError(
            "the number of decimals must be a whole number from 0 to 6",
            getattr(arg, "offset", call.offset),
        )


_ROUNDING = {
    "round": ROUND_HALF_UP,  # half away from zero, as spreadsheets round
    "round_half_even": ROUND_HALF_EVEN,  # half to the even digit (banker's rounding)
    "floor": ROUND_FLOOR,  # down, towards minus infinity
    "ceiling": ROUND_CEILING,  # up, towards plus infinity
}


def before_rounding(expr: Expr, env: Env) -> Any:
    """What a metric that is a rounding (``round(x, 1)``, ``floor(x)``, ...)
    rounds: explanations show it beside the result. None for other metrics."""
    if isinstance(expr, Call) and expr.function in _ROUNDING:
        return evaluate(expr.args[0], env)
    return None


def _run_round(call, env, ev):
    value = ev(call.args[0], env)
    if value is None:
        return None
    digits = int(call.args[1].value) if len(call.args) == 2 else 0
    rounded = Decimal(value).quantize(Decimal(1).scaleb(-digits), _ROUNDING[call.function])
    return int(rounded) if digits == 0 and isinstance(value, int) else rounded


def _check_abs(call, c):
    _args(call, 1, "abs(x)")
    t = c.type_of(call.args[0])
    _require(t.is_numeric, call, f"abs needs a number, not a {t.describe()}")
    return t


def _run_abs(call, env, ev):
    value = ev(call.args[0], env)
    return None if value is None else abs(value)


def _subject_args(call: Call, checker: Checker, usage: str, extra: int) -> None:
    """Check the subject of a memory function: a program, or a classification
    and one of its values, followed by ``extra`` more arguments."""
    if not call.args or not isinstance(call.args[0], Name) or checker.recall is None:
        raise ParseError(
            f"{call.function} needs a program or a classification: {usage}", call.offset
        )
    values = checker.recall(call.args[0])
    wanted = (1 if values is None else 2) + extra
    if len(call.args) != wanted:
        if values is None:
            what = f"the program '{call.args[0].name}'"
        else:
            what = f"the classification '{call.args[0].name}' and one of its values"
        raise ParseError(
            f"{call.function} takes {what}"
            + (f" and a number of quarters: {usage}" if extra else f": {usage}"),
            call.offset,
        )
    if values is not None:
        value = call.args[1]
        if not isinstance(value, Name) or value.name not in values:
            raise ParseError(
                f"'{getattr(value, 'name', value)}' is not a value of "
                f"'{call.args[0].name}' (values: {', '.join(values)})",
                getattr(value, "offset", call.offset),
            )


def _subject(call: Call, extra: int = 0) -> str | tuple[str, str]:
    args = call.args[: len(call.args) - extra]
    return args[0].name if len(args) == 1 else (args[0].name, args[1].name)


def _check_held(call, c):
    usage = "held(premier, 4) or held(size, strategic, 4)"
    _subject_args(call, c, usage, 1)
    _quarters_arg(call, len(call.args) - 1, usage)
    return T_BOOL


def _run_held(call, env, _):
    start = quarters_before(env.as_of, int(call.args[-1].value))
    return env.memory.held_since(_subject(call, 1), start)


def _check_recalled_count(call, c):
    _subject_args(call, c, f"{call.function}(premier) or {call.function}(size, strategic)", 0)
    return T_INT


def _run_runs_held(call, env, _):
    return env.memory.runs_held(_subject(call))


def _run_since_held(call, env, _):
    subject = _subject(call)
    memory = env.memory
    day = (
        memory.first_held(subject) if call.function.endswith("first") else memory.last_held(subject)
    )
    if day is None:
        return None
    months = _months_between(day, env.as_of)
    return months // 3 if call.function.startswith("quarters") else months


def _months_between(start: dt.date, end: dt.date) -> int:
    """Whole months from ``start`` to ``end``."""
    months = (end.year - start.year) * 12 + end.month - start.month
    return months - 1 if end.day < start.day else months


FUNCTIONS: dict[str, Function] = {
    "attainment": Function(
        "attainment(4): revenue / target over the last 4 quarters",
        _check_attainment,
        _run_attainment,
    ),
    "total": Function(
        "total(revenue, 4): sum of a figure over the last 4 quarters", _check_total, _run_total
    ),
    "average": Function(
        "average(deals_closed, 4): average per reported quarter", _check_average, _run_average
    ),
    "growth": Function(
        "growth(revenue, 4): last 4 quarters against the 4 before", _check_growth, _run_growth
    ),
    "quarters_below_target": Function(
        "quarters_below_target(): consecutive most recent quarters under target",
        _check_below,
        _run_below,
    ),
    "quarters_reported": Function(
        "quarters_reported(4): quarters with figures", _check_reported, _run_reported
    ),
    "days_since": Function("days_since(joined_on)", _check_date_fn, _run_days_since),
    "quarters_since": Function(
        "quarters_since(joined_on): whole quarters", _check_date_fn, _run_quarters_since
    ),
    "overlap": Function(
        "overlap(focus_verticals, priority_verticals): items in both", _check_overlap, _run_overlap
    ),
    "count": Function("count(focus_verticals): number of items", _check_count, _run_count),
    "highest": Function(
        "highest(revenue, 8): the highest quarter's figure", _check_pick, _run_pick
    ),
    "lowest": Function("lowest(revenue, 8): the lowest quarter's figure", _check_pick, _run_pick),
    "first": Function(
        "first(revenue, 8): the earliest reported quarter's figure", _check_pick, _run_pick
    ),
    "last": Function(
        "last(revenue, 8): the most recent reported quarter's figure", _check_pick, _run_pick
    ),
    "if": Function("if(condition, a, b): a when the condition holds, else b", _check_if, _run_if),
    "min": Function("min(a, b, ...)", _check_minmax, _run_minmax),
    "max": Function("max(a, b, ...)", _check_minmax, _run_minmax),
    "round": Function(
        "round(x) or round(x, 2): half away from zero (2.45 -> 2.5)", _check_round, _run_round
    ),
    "round_half_even": Function(
        "round_half_even(x, 1): half to the even digit (2.45 -> 2.4, 2.55 -> 2.6)",
        _check_round,
        _run_round,
    ),
    "floor": Function("floor(x) or floor(x, 2): down (2.49 -> 2)", _check_round, _run_round),
    "ceiling": Function("ceiling(x) or ceiling(x, 2): up (2.01 -> 3)", _check_round, _run_round),
    "abs": Function("abs(x)", _check_abs, _run_abs),
    # Memory: what the partner held in earlier runs (engine.ruleset.memory).
    "held": Function(
        "held(premier, 4): yes if an earlier run in the last 4 quarters enrolled the "
        "partner in premier (held(size, strategic, 4) for a classification)",
        _check_held,
        _run_held,
    ),
    "runs_held": Function(
        "runs_held(premier): the latest earlier runs in a row that enrolled the partner",
        _check_recalled_count,
        _run_runs_held,
    ),
    "months_since_first": Function(
        "months_since_first(premier): whole months since it first held it",
        _check_recalled_count,
        _run_since_held,
    ),
    "months_since_last": Function(
        "months_since_last(premier): whole months since it last held it",
        _check_recalled_count,
        _run_since_held,
    ),
    "quarters_since_first": Function(
        "quarters_since_first(premier): whole quarters since it first held it",
        _check_recalled_count,
        _run_since_held,
    ),
    "quarters_since_last": Function(
        "quarters_since_last(premier): whole quarters since it last held it",
        _check_recalled_count,
        _run_since_held,
    ),
}
