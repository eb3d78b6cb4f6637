"""What a letter template may do: no markup from data, bounded time and memory.

Templates are untrusted (a manager edits them; a hostile one may be
slipped in). Jinja2's sandbox keeps them from Python's internals; this
module closes what it leaves open, for the letter environment
(:class:`engine.letters.rendering.LetterRenderer`):

- **Markup from data.** Under autoescaping, some of Jinja's filters return
  Markup for plain text (``forceescape``, ``tojson``, ``replace``,
  ``indent``, ...), and Markup joined with text (``~``, ``+``, ``%``,
  ``replace``, ``format``) takes the text in. A letter takes Markup for the
  template's own text, so a partner named ``[Click here](https://evil.example)``
  would become a live link. So every filter is wrapped (:func:`letter_filters`):
  Markup made from data alone is turned back into the data it was; and
  where the template's Markup takes data in (:func:`data_for_markup`), the
  data goes in as a placeholder, as ``{{ }}`` outputs do. ``urlize`` and
  ``xmlattr`` (data into HTML) are removed, and so are ``random`` and the
  ``lipsum`` global (a letter must read the same each time it is written).
- **Memory.** Each operation that can make a large value from small ones
  (``'a' * 10**10``, ``center(10**9)``, ``replace`` in a loop, ``**``,
  ``%`` widths, ``batch``/``slice`` fill) is checked before it runs, so no
  value in a template grows past MAX_VALUE characters or items; a letter
  longer than MAX_LETTER characters fails too.
- **Time.** A letter that takes longer than TIME_LIMIT seconds to render is
  stopped (:func:`time_limit`), so a template that loops without end fails
  the template check, with its file and line, before the run starts.

Every limit is far beyond any real letter (they are a few kilobytes and
render in a millisecond), and breaking one is a template error that names
its line.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from markupsafe import Markup

MAX_VALUE = 1_000_000  # characters of a string, items of a list, digits of a number
MAX_LETTER = 1_000_000  # characters of a rendered letter
MAX_OUTPUTS = 100_000  # values ({{ }} outputs) in one letter
TIME_LIMIT = 5.0  # seconds to render one letter
REMOVED_FILTERS = frozenset({"urlize", "xmlattr", "random"})
REMOVED_GLOBALS = frozenset({"lipsum"})
# Python methods a template may call that make a value longer than their inputs.
GROWING_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "format", "format_map"}
)
_WIDTHS = re.compile(r"(\d+)")


class TemplateLimitError(Exception):
    """A template went past one of this module's limits."""


def too_large(what: str) -> TemplateLimitError:
    return TemplateLimitError(
        f"{what} would be larger than {MAX_VALUE:,} characters or items: a letter "
        "template may not make values that large"
    )


# --- filters ---------------------------------------------------------------------


def letter_filters(
    filters: dict[str, Callable], as_data: Callable[[Any], Markup]
) -> dict[str, Callable]:
    """The filters a letter template gets: Jinja's (and ours) wrapped, see
    above; ``as_data`` turns data into what Markup may hold (a placeholder)."""
    return {
        name: _checked_filter(name, function, as_data)
        for name, function in filters.items()
        if name not in REMOVED_FILTERS
    }


def _checked_filter(name: str, function: Callable, as_data: Callable[[Any], Markup]) -> Callable:
    check = _FILTER_CHECKS.get(name)
    takes_context = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        value_at = 1 if takes_context else 0
        value = args[value_at] if len(args) > value_at else None
        if name in _MATERIALISED and not isinstance(value, (str, list, tuple, dict)):
            value = list(value)  # counted by the check, then given to the filter whole
            args = (*args[:value_at], value, *args[value_at + 1 :])
        if check is not None:
            check(value, *args[value_at + 1 :], **kwargs)
        if isinstance(value, Markup) and name in _MIXING:
            rest, kwargs = data_for_markup(name, args[value_at + 1 :], kwargs, as_data)
            args = (*args[: value_at + 1], *rest)
        result = function(*args, **kwargs)
        if isinstance(result, Markup) and not isinstance(value, Markup):
            return result.unescape()  # data stays data
        return check_size(result)

    return checked


def _size(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 1


def _width(what: str, width: Any) -> None:
    if isinstance(width, int) and width > MAX_VALUE:
        raise too_large(what)


def _check_center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
    _width("center", width)


def _check_indent(value: Any, width: Any = 4, *_: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    lines = str(value).count("\n") + 1
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if lines * step + _size(value) > MAX_VALUE:
        raise too_large("indent")


def _check_wordwrap(value: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else "\n") or "\n"
    if isinstance(width, int) and width > 0:
        if _size(value) // width * len(str(wrapstring)) > MAX_VALUE:
            raise too_large("wordwrap")


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    text, old, new = str(value), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    if len(text) + times * len(new) > MAX_VALUE:
        raise too_large("replace")


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_format_pattern(str(value), (*args, *kwargs.values()))


def _check_fill(what: str) -> Callable:
    def check(value: Any, count: Any = 1, *_: Any, **__: Any) -> None:
        _width(what, count)

    return check


def _check_join(value: Any, separator: Any = "", *_: Any, **__: Any) -> None:
    if len(value) * (len(str(separator)) + 1) > MAX_VALUE:
        raise too_large("join")


# Filters whose check counts their items: an iterator is made a list first.
_MATERIALISED = frozenset({"join", "batch", "slice"})

_FILTER_CHECKS: dict[str, Callable] = {
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "format": _check_format,
    "batch": _check_fill("batch"),
    "slice": _check_fill("slice"),
    "join": _check_join,
}


def check_format_pattern(pattern: str, arguments: tuple) -> None:
    """``'%999999999s' % x``, ``'{:>999999999}'.format(x)``: widths are bounded,
    and so are ``*`` widths taken from the arguments."""
    if any(int(digits) > MAX_VALUE for digits in _WIDTHS.findall(pattern)):
        raise too_large("a format width")
    nested = "*" in pattern or "{" in pattern
    if nested and any(isinstance(a, int) and a > MAX_VALUE for a in arguments):
        raise too_large("a format width")


# --- data into markup ---------------------------------------------------------------

_MIXING = frozenset({"replace", "format", "format_map", "join"})  # markup taking data in


def _datum(value: Any, as_data: Callable[[Any], Markup]) -> Any:
    return as_data(value) if isinstance(value, str) and not isinstance(value, Markup) else value


def data_for_markup(
    name: str, args: tuple, kwargs: dict, as_data: Callable[[Any], Markup]
) -> tuple[tuple, dict]:
    """The arguments of ``markup.<name>(...)`` (a filter or a method of the
    template's Markup) with their text made data: ``replace`` gets its new
    text so, ``format`` and ``join`` every text argument."""
    if name == "replace":
        if len(args) > 1:
            return (args[0], _datum(args[1], as_data), *args[2:]), kwargs
        return args, {k: _datum(v, as_data) if k == "new" else v for k, v in kwargs.items()}
    if name == "join" and args and not isinstance(args[0], str):
        return ([_datum(v, as_data) for v in args[0]], *args[1:]), kwargs
    if name == "format_map" and args and isinstance(args[0], dict):
        return ({k: _datum(v, as_data) for k, v in args[0].items()}, *args[1:]), kwargs
    return (
        tuple(_datum(v, as_data) for v in args),
        {k: _datum(v, as_data) for k, v in kwargs.items()},
    )


def mixed_binop(
    operator: str, left: Any, right: Any, as_data: Callable[[Any], Markup]
) -> tuple[Any, Any]:
    """``markup + text``, ``text + markup``, ``markup % text``: the text as data."""
    if operator == "+":
        if isinstance(left, Markup):
            return left, _datum(right, as_data)
        if isinstance(right, Markup):
            return _datum(left, as_data), right
    elif operator == "%" and isinstance(left, Markup):
        if isinstance(right, tuple):
            return left, tuple(_datum(v, as_data) for v in right)
        if isinstance(right, dict):
            return left, {k: _datum(v, as_data) for k, v in right.items()}
        return left, _datum(right, as_data)
    return left, right


def joined(parts: tuple, as_data: Callable[[Any], Markup]) -> Any:
    """``a ~ b ~ c``: Markup when the template's Markup is among the parts,
    the others then going in as data; else plain text."""
    if any(isinstance(p, Markup) for p in parts):
        result: Any = Markup("").join(p if isinstance(p, Markup) else as_data(p) for p in parts)
    else:
        result = "".join(map(str, parts))
    return check_size(result)


# --- operators and methods -------------------------------------------------------


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before ``left operator right`` runs in a template (the intercepted ones)."""
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, (str, list, tuple)) and isinstance(times, int):
                if len(sequence) * times > MAX_VALUE:
                    raise too_large("a repeated string or list")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * abs(left).bit_length() > MAX_VALUE * 3.33:
                raise too_large("a power")
    elif operator == "%" and isinstance(left, str):
        check_format_pattern(left, right if isinstance(right, tuple) else (right,))
    elif operator == "+" and isinstance(left, (str, list, tuple)):
        if isinstance(right, (str, list, tuple)) and len(left) + len(right) > MAX_VALUE:
            raise too_large("a joined string or list")


INTERCEPTED_BINOPS = frozenset({"*", "**", "%", "+"})


def check_method(method: Any, args: tuple, kwargs: dict) -> None:
    """Before a template calls a Python method that can grow a value (``center``)."""
    name = getattr(method, "__name__", "")
    bound = getattr(getattr(method, "__wrapped__", method), "__self__", None)  # str.format wrapped
    if name not in GROWING_METHODS or not isinstance(bound, str):
        return
    text = bound
    if name in ("center", "ljust", "rjust", "zfill"):
        _width(name, args[0] if args else kwargs.get("width"))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int) and text.count("\t") * size > MAX_VALUE:
            raise too_large("expandtabs")
    elif name == "replace":
        _check_replace(text, *args, **kwargs)
    elif name == "join" and args:
        _check_join(args[0], text)
    else:  # format, format_map
        check_format_pattern(text, (*args, *kwargs.values()))


def check_size(value: Any) -> Any:
    """A value a template made: refused when it is too large."""
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_VALUE:
        raise too_large("a value")
    return value


def check_letter(parts: list[str]) -> str:
    """The rendered pieces of a letter, joined: refused when too long."""
    if sum(map(len, parts)) > MAX_LETTER:
        raise TemplateLimitError(
            f"the letter is longer than {MAX_LETTER:,} characters: a loop in the "
            "template must be running too long"
        )
    return "".join(parts)


# --- time --------------------------------------------------------------------------


def _out_of_time(_signal: int, _frame: Any) -> None:
    if not _armed:  # a tick that came as the block ended
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    raise TemplateLimitError(
        f"the letter took longer than {TIME_LIMIT:g} seconds to render: a loop in "
        "the template must be running too long (or without end)"
    )


_alarm_set = False  # whether this process's SIGALRM handler is _out_of_time
_armed = False  # whether a block is being timed
# After the limit the alarm rings again at this interval until the block
# stops: the error raised in a garbage collector's callback or a __del__
# (which Python reports and drops) must not let a template run on.
RING_AGAIN = 0.1


@contextlib.contextmanager
def time_limit(seconds: float | None = None) -> Iterator[None]:
    """Stop the block after ``seconds`` (default TIME_LIMIT; a real-time
    alarm, SIGALRM, whose handler is set once per process). Where there is
    none (Windows, a thread other than the main one), the block runs
    unbounded in time; the size limits still hold."""
    global _alarm_set, _armed
    seconds = TIME_LIMIT if seconds is None else seconds
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    if not _alarm_set:
        signal.signal(signal.SIGALRM, _out_of_time)
        _alarm_set = True
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds, RING_AGAIN)
    try:
        yield
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
