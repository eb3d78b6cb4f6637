"""The small, safe expression language used by metrics and conditions.

Text is tokenized and parsed here into a tree of frozen dataclasses; nothing
a user writes is ever handed to Python's ``eval``. Every node keeps the
offset of its first character so errors can point at the exact column.

Grammar (lowest to highest precedence)::

    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum)?
    sum      := product (("+" | "-") product)*
    product  := unary (("*" | "/") unary)*
    unary    := "-" unary | atom
    atom     := NUMBER | PERCENT | MONEY | DATE | STRING | "yes" | "no"
              | NAME | NAME "(" [expr ("," expr)*] ")" | "(" expr ")"
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from dataclasses import dataclass

from engine.ruleset.value_types import DECIMALS, MAX_MAGNITUDE


class ParseError(Exception):
    """A syntax error at ``offset`` characters into the text."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Token:
    kind: str  # NUMBER PERCENT MONEY DATE STRING NAME OP END
    text: str
    offset: int
    value: object = None


COMPARISON_OPS = ("==", "!=", "<", "<=", ">", ">=")
_OPS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",")
# Spellings people try that are not operators here, and what they meant.
_WRONG_OPS = {
    "=": "==",
    "=>": ">=",
    "=<": "<=",
    "<>": "!=",
    "≥": ">=",
    "≤": "<=",
    "≠": "!=",
    "&&": "and",
    "||": "or",
    "!": "not",
    "%": "a percentage like 90%",
}
KEYWORDS = ("and", "or", "not", "in", "contains", "between", "is", "missing", "yes", "no")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w.]))
  | (?P<money>\$(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w.]))
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?P<pct>%)?(?![\w.]))
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|=>|=<|<>|&&|\|\||[-+*/()\[\],<>=!%≥≤≠])
""",
    re.VERBOSE,
)


_SHORT_AMOUNT = re.compile(r"\$?(\d+(?:\.\d+)?)\s*([kKmM])(?![\w.])")
_CURRENCY_SIGNS = "€£¥₹"


def _unexpected(text: str, pos: int) -> str:
    """Why the text at ``pos`` is not a token, with the usual fixes: an
    amount in thousands (600k), a currency sign other than $."""
    short = _SHORT_AMOUNT.match(text, pos)
    if short:
        number = float(short.group(1)) * (1_000 if short.group(2) in "kK" else 1_000_000)
        return (
            f"'{short.group()}': write the number in full, like {number:,.0f} "
            f"(${number:,.0f} for money)"
        )
    if text[pos] in _CURRENCY_SIGNS:
        return (
            f"'{text[pos]}': amounts are written with $ (like $600,000) and are in "
            "the rule set's currency"
        )
    return f"unexpected character '{text[pos]}'"


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            char = text[pos]
            if char in "'\"":
                raise ParseError(f"text starting here has no closing {char}", pos)
            raise ParseError(_unexpected(text, pos), pos)
        kind = match.lastgroup if match.lastgroup != "pct" else "number"
        raw = match.group()
        if kind == "space":
            pass
        elif kind == "date":
            try:
                value = dt.date.fromisoformat(raw)
            except ValueError:
                raise ParseError(f"'{raw}' is not a real calendar date", pos) from None
            tokens.append(Token("DATE", raw, pos, value))
        elif kind == "money":
            value = _bounded_number(raw, raw[1:].replace(",", ""), pos, DECIMALS)
            tokens.append(Token("MONEY", raw, pos, value))
        elif kind == "number":
            if match.group("pct"):
                value = _bounded_number(raw, raw[:-1], pos, DECIMALS - 2) / 100
                tokens.append(Token("PERCENT", raw, pos, value))
            else:
                tokens.append(Token("NUMBER", raw, pos, _bounded_number(raw, raw, pos, DECIMALS)))
        elif kind == "string":
            tokens.append(Token("STRING", raw, pos, raw[1:-1]))
        elif kind == "name":
            tokens.append(Token("NAME", raw, pos, raw))
        else:
            if raw in _WRONG_OPS:
                raise ParseError(
                    f"unknown operator '{raw}'; did you mean '{_WRONG_OPS[raw]}'?", pos
                )
            tokens.append(Token("OP", raw, pos, raw))
        pos = match.end()
    tokens.append(Token("END", "", len(text)))
    return tokens


def _bounded_number(raw: str, digits: str, pos: int, decimals: int) -> float:
    """A number written in a rule; as large as any value can be, no larger,
    and no finer than values are kept (``decimals`` places): a threshold of
    0.0000001 would be read as 0 by the engine, 0.0000001 by the explainer."""
    fraction = digits.partition(".")[2].rstrip("0")
    if len(fraction) > decimals:
        raise ParseError(
            f"'{raw}' has more decimals than values keep: write at most {decimals} "
            f"decimal places{' in a percentage' if raw.endswith('%') else ''}",
            pos,
        )
    value = float(digits)
    if not value < MAX_MAGNITUDE:  # inf too
        raise ParseError(
            f"'{raw if len(raw) <= 20 else raw[:17] + '...'}' is too large; numbers in rules "
            f"stay below {MAX_MAGNITUDE:,.0f}, as partner values do",
            pos,
        )
    return value


# --- expression tree -------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: object
    kind: str  # number, percent, money, date, text, yes/no
    offset: int
    text: str


@dataclass(frozen=True)
class Name:
    name: str
    offset: int


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "not"
    operand: Expr
    offset: int


@dataclass(frozen=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    offset: int


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]
    offset: int


Expr = Literal | Name | Unary | Binary | Call


def literal_from_token(token: Token) -> Literal:
    """A literal token as an expression node (NAME tokens become text)."""
    kind = {
        "NUMBER": "number",
        "PERCENT": "percent",
        "MONEY": "money",
        "DATE": "date",
        "STRING": "text",
        "NAME": "text",
    }[token.kind]
    if token.kind == "NAME" and token.text in ("yes", "no"):
        return Literal(token.text == "yes", "yes/no", token.offset, token.text)
    return Literal(token.value, kind, token.offset, token.text)


class TokenStream:
    """A cursor over tokens with helpers shared by the expression and condition parsers."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def at(self, kind: str, text: str | None = None) -> bool:
        token = self.current
        return token.kind == kind and (text is None or token.text == text)

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        return self.advance() if self.at(kind, text) else None

    def expect(self, kind: str, text: str | None, what: str) -> Token:
        if self.at(kind, text):
            return self.advance()
        raise ParseError(
            f"expected {what}, found {self.describe(self.current)}", self.current.offset
        )

    @staticmethod
    def describe(token: Token) -> str:
        return "the end of the text" if token.kind == "END" else f"'{token.text}'"

    def expect_end(self) -> None:
        if not self.at("END"):
            token = self.current
            hint = ""
            before = self.tokens[self.index - 1] if self.index else None
            if token.kind == "NAME" and token.text not in KEYWORDS:
                close = difflib.get_close_matches(token.text, KEYWORDS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                if not close and before is not None and before.kind in ("NUMBER", "MONEY"):
                    hint = (
                        f"; remove '{token.text}' after {before.text}: numbers in rules "
                        "are written without a unit"
                    )
            raise ParseError(f"unexpected {self.describe(token)}{hint}", token.offset)


def parse_expression(text: str) -> Expr:
    """Parse a metric expression; raises ParseError with an offset."""
    if not text.strip():
        raise ParseError("the expression is empty", 0)
    stream = TokenStream(text)
    expr = _parse_or(stream)
    stream.expect_end()
    return expr


def _left_associative(s: TokenStream, operand, kind: str, ops: tuple[str, ...]) -> Expr:
    """operand (op operand)*, grouped from the left."""
    left = operand(s)
    while s.current.kind == kind and s.current.text in ops:
        tok = s.advance()
        left = Binary(tok.text, left, operand(s), tok.offset)
    return left


def _parse_or(s: TokenStream) -> Expr:
    return _left_associative(s, _parse_and, "NAME", ("or",))


def _parse_and(s: TokenStream) -> Expr:
    return _left_associative(s, _parse_not, "NAME", ("and",))


def _parse_not(s: TokenStream) -> Expr:
    if s.at("NAME", "not"):
        tok = s.advance()
        return Unary("not", _parse_not(s), tok.offset)
    return _parse_compare(s)


def _parse_compare(s: TokenStream) -> Expr:
    left = _parse_sum(s)
    if s.current.kind == "OP" and s.current.text in COMPARISON_OPS:
        tok = s.advance()
        left = Binary(tok.text, left, _parse_sum(s), tok.offset)
    return left


def _parse_sum(s: TokenStream) -> Expr:
    return _left_associative(s, _parse_product, "OP", ("+", "-"))


def _parse_product(s: TokenStream) -> Expr:
    return _left_associative(s, _parse_unary, "OP", ("*", "/"))


def _parse_unary(s: TokenStream) -> Expr:
    if s.at("OP", "-"):
        tok = s.advance()
        return Unary("-", _parse_unary(s), tok.offset)
    return _parse_atom(s)


def _parse_atom(s: TokenStream) -> Expr:
    tok = s.current
    if tok.kind in ("NUMBER", "PERCENT", "MONEY", "DATE", "STRING"):
        s.advance()
        return literal_from_token(tok)
    if tok.kind == "NAME":
        if tok.text in ("yes", "no"):
            s.advance()
            return literal_from_token(tok)
        if tok.text in KEYWORDS:
            raise ParseError(f"'{tok.text}' cannot be used here", tok.offset)
        s.advance()
        if s.accept("OP", "("):
            args: list[Expr] = []
            if not s.at("OP", ")"):
                args.append(_parse_or(s))
                while s.accept("OP", ","):
                    args.append(_parse_or(s))
            s.expect("OP", ")", "')' to close the call")
            return Call(tok.text, tuple(args), tok.offset)
        return Name(tok.text, tok.offset)
    if s.accept("OP", "("):
        inner = _parse_or(s)
        s.expect("OP", ")", "a closing ')'")
        return inner
    if tok.kind == "END":
        raise ParseError("the expression ends too early", tok.offset)
    raise ParseError(f"unexpected {s.describe(tok)}", tok.offset)


def names_in(expr: Expr) -> list[Name]:
    """Every name an expression reads (not function names)."""
    if isinstance(expr, Name):
        return [expr]
    if isinstance(expr, Unary):
        return names_in(expr.operand)
    if isinstance(expr, Binary):
        return names_in(expr.left) + names_in(expr.right)
    if isinstance(expr, Call):
        if expr.function in RECALLING:  # they name programs and classifications
            return []
        return [n for arg in expr.args for n in names_in(arg)]
    return []


# Functions of memory (engine.ruleset.metrics): their arguments name what a
# partner held in earlier runs (a program, or a classification and a value),
# not values the metric reads now.
RECALLING = frozenset(
    {
        "held",
        "runs_held",
        "months_since_first",
        "months_since_last",
        "quarters_since_first",
        "quarters_since_last",
    }
)


def recalls(expr: Expr) -> bool:
    """Whether an expression reads a partner's memory of earlier runs."""
    if isinstance(expr, Call):
        return expr.function in RECALLING or any(recalls(arg) for arg in expr.args)
    if isinstance(expr, Unary):
        return recalls(expr.operand)
    if isinstance(expr, Binary):
        return recalls(expr.left) or recalls(expr.right)
    return False
