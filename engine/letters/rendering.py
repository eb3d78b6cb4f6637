"""Rendering letters from the Jinja2 templates in ``templates/``.

Templates are Markdown, one file per letter kind and language
(``templates/fr/at_risk.md.j2``), each extending that language's
``base.md.j2``. They run in Jinja2's sandbox with ``StrictUndefined``.

Roster values are data, never template code or markup. Every ``{{ ... }}``
output is replaced, while rendering, by a numbered placeholder; the
rendered Markdown is then

- the text letter, with the placeholders replaced by the values as they are;
- the HTML letter, converted to HTML by cmark-gfm (CommonMark with tables;
  raw HTML written in a template is left out) with the placeholders replaced
  by the values HTML-escaped.

So a partner named ``*{{ 7*7 }}* <script>`` reads exactly so in both, and
never turns into markup. Letters with the same structure share the
Markdown-to-HTML conversion (a cache keyed by the placeholder skeleton),
which keeps HTML letters about as fast as text ones.

Numbers, money, percentages, and dates are formatted for the partner's
locale with Babel. A language without a template for the letter's kind
falls back to the default language, and the letter says so.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import html
import re
import types
from pathlib import Path
from typing import Any

import cmarkgfm
from babel import Locale, UnknownLocaleError, localedata
from babel.dates import format_date
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, format_percent, parse_pattern
from jinja2 import FileSystemLoader, StrictUndefined, TemplateSyntaxError
from jinja2.compiler import CodeGenerator
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from engine.letters import sandbox
from engine.letters.facts import KINDS, LetterFacts
from engine.letters.phrases import load_phrases
from engine.letters.settings import LetterSettings, load_terms
from engine.ruleset.value_types import (
    BOOL,
    CHOICE,
    DATE,
    INTEGER,
    LIST,
    MONEY,
    NUMBER,
    PERCENT,
    plain_text,
)
from engine.ruleset.yaml_source import outside_folder

TEMPLATE_SUFFIX = ".md.j2"
HTML_LAYOUT = "letter.html.j2"
_OPEN, _CLOSE = "\ue000", "\ue001"  # Unicode private-use characters: never in templates
_PLACEHOLDERS = [Markup(f"{_OPEN}{i}{_CLOSE}") for i in range(512)]  # made once
_BODY_MARK, _SUBJECT_MARK = "\ue002", "\ue003"
_RAW_HTML_OMITTED = "<!-- raw HTML omitted -->"  # what cmark-gfm writes instead
_FORMAT_CACHE_SIZE = 20_000
_PERCENT_TEXT = re.compile(r"^\d+(?:\.\d+)?%$")
_MONEY_TEXT = re.compile(r"^\$(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d{1,2})?$")  # "$20,000"
_ASCII_DIGITS = frozenset("0123456789")


class Letter:
    """A rendered letter; its text and HTML are made when first asked for."""

    def __init__(
        self,
        subject: str,
        skeleton: str,
        slots: list[str],
        page,
        language: str,
        fallback: bool,
        locale: str,
    ):
        self.subject = subject
        self.language = language  # the language the letter is written in
        self.fallback = fallback  # True when the partner's language had no template
        self.locale = locale
        self._skeleton, self._slots, self._page = skeleton, slots, page

    @functools.cached_property
    def text(self) -> str:
        return _fill(self._skeleton, self._slots, escape=False)

    @functools.cached_property
    def html(self) -> str:
        body = Markup(_fill(markdown_to_html(self._skeleton), self._slots, escape=True))
        return self._page(body=body, subject=self.subject, language=self.language)

    # As written to files, once: an .eml holds both beside the .txt and the .html.
    @functools.cached_property
    def text_utf8(self) -> bytes:
        return self.text.encode("utf-8")

    @functools.cached_property
    def html_utf8(self) -> bytes:
        return self.html.encode("utf-8")

    @property
    def loses_raw_html(self) -> bool:
        """Whether the template wrote raw HTML, which HTML letters leave out
        (roster values never count: they are placeholders here)."""
        return _RAW_HTML_OMITTED in markdown_to_html(self._skeleton)


@functools.lru_cache(maxsize=20_000)
def _html_escape(value: str) -> str:
    """``html.escape``, remembered: most values (terms, thresholds, benefits)
    repeat from letter to letter."""
    return html.escape(value, quote=True)


@functools.lru_cache(maxsize=4096)
def markdown_to_html(skeleton: str) -> str:
    """CommonMark and tables, by GitHub's C library: no autolinks, raw HTML
    left out, unsafe links (``javascript:``) emptied. About 50 µs for a
    letter, where markdown-it-py took a millisecond."""
    return cmarkgfm.markdown_to_html_with_extensions(skeleton, extensions=["table"])


class _Slots:
    """Where ``{{ }}`` outputs of data go while a letter renders.

    Used as the environment's ``finalize``: every output of data becomes a
    placeholder and the value is kept aside. The environment autoescapes, so
    what the template itself produced (a macro's output, a ``{% set %}``
    block) arrives as Markup and is kept as it is, with the placeholders
    inside it; everything else is data. Outside a letter (``values`` is
    None) data is returned as text.
    """

    def __init__(self) -> None:
        self.values: list[str] | None = None

    def __call__(self, value: Any) -> Markup:
        kind = type(value)
        if kind is str:  # the common case first: what the filters return
            text = value
        elif isinstance(value, Markup):
            return value
        else:
            text = "" if value is None else plain_text(value)
        slots = self.values
        if slots is None:
            return escape(text)
        index = len(slots)
        if index >= sandbox.MAX_OUTPUTS:
            raise sandbox.TemplateLimitError(
                f"the letter has more than {sandbox.MAX_OUTPUTS:,} values in it: a loop "
                "in the template must be running too long"
            )
        slots.append(text)
        return (
            _PLACEHOLDERS[index]
            if index < len(_PLACEHOLDERS)
            else Markup(f"{_OPEN}{index}{_CLOSE}")
        )


class _SlotCodeGenerator(CodeGenerator):
    """Compiles a ``{{ }}`` output to ``finalize(value)`` where autoescaping
    would make it ``escape(finalize(value))``: finalize (:class:`_Slots`)
    returns Markup for everything, which escape would only copy (a tenth of
    a letter's rendering time). Outputs in ``{% autoescape %}`` blocks are
    compiled as Jinja does."""

    def _output_child_pre(self, node, frame, finalize) -> None:
        if _finalize_only(frame, finalize):
            self.write(finalize.src)
        else:
            super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node, frame, finalize) -> None:
        if _finalize_only(frame, finalize):
            self.write(")")
        else:
            super()._output_child_post(node, frame, finalize)

    def visit_Concat(self, node, frame) -> None:
        """``a ~ b``: data joined to the template's markup stays data (engine.letters.sandbox)."""
        self.write("environment.join_parts((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


def _finalize_only(frame, finalize) -> bool:
    return (
        frame.eval_ctx.autoescape
        and not frame.eval_ctx.volatile
        and finalize.src == "environment.finalize("
    )


_PLAIN_CALLABLES = (Macro, types.BuiltinMethodType)
# Attribute names the sandbox wraps when they are read (str.format), never remembered.
_WRAPPED_ATTRIBUTES = frozenset({"format", "format_map"})


class _FolderLoader(FileSystemLoader):
    """The templates of one folder, never a link to a file outside it."""

    def get_source(self, environment: Any, template: str) -> tuple:
        source, filename, uptodate = super().get_source(environment, template)
        outside = outside_folder(Path(filename), Path(self.searchpath[0]))
        if outside:  # reported as the template checks report a broken template
            raise TemplateSyntaxError(outside, 1, template, filename)
        return source, filename, uptodate


class _LetterSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox (the immutable one: templates cannot change the data),
    reading a dict's keys first, and remembering which attributes it allows.

    ``r.name`` on a dict goes straight to the key, skipping the failed
    attribute lookup the sandbox tries first (a quarter of a letter's
    rendering time). A key thus wins over a dict method of the same name
    (``p.items`` is the data).

    Other attributes (``loop.last``, ``r.key.endswith``) get the sandbox's
    own checks the first time; its verdict depends only on the object's type
    and the attribute's name, so an allowed (type, name) is read directly
    from then on. Refused ones are checked every time.
    """

    code_generator_class = _SlotCodeGenerator
    intercepted_binops = sandbox.INTERCEPTED_BINOPS  # see engine.letters.sandbox

    def __init__(self, *args: Any, as_data: Any = escape, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allowed: set[tuple[type, str]] = set()
        self.as_data = as_data  # data into the template's Markup: a placeholder
        self.filters = sandbox.letter_filters(self.filters, as_data)
        for name in sandbox.REMOVED_GLOBALS:
            self.globals.pop(name, None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sandbox.check_binop(operator, left, right)
        left, right = sandbox.mixed_binop(operator, left, right, self.as_data)
        return super().call_binop(context, operator, left, right)

    def join_parts(self, parts: tuple) -> Any:
        return sandbox.joined(parts, self.as_data)

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif (kind, attribute) in self._allowed:
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)

    def is_safe_callable(self, obj: Any) -> bool:
        # A macro or a method of a built-in type (``r.key.endswith``) has no
        # attributes of its own, so never the ones the sandbox looks for.
        if type(obj) in _PLAIN_CALLABLES:
            return True
        return super().is_safe_callable(obj)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        # What the sandbox and Context.call would do for macros and built-in
        # methods, without looking for pass_context markers they cannot carry
        # (about a sixth of a letter's rendering). str.format and format_map
        # always take the sandbox's own way (older Jinja2 checks them here).
        kind = type(__obj)
        if kind is not Macro:  # a method that can grow a value, or take data into markup
            name = getattr(__obj, "__name__", None)
            if name in sandbox.GROWING_METHODS:
                if name == "join" and args and not isinstance(args[0], (str, list, tuple)):
                    args = (list(args[0]), *args[1:])  # counted, then joined whole
                sandbox.check_method(__obj, args, kwargs)
                bound = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
                if isinstance(bound, Markup):
                    args, kwargs = sandbox.data_for_markup(name, args, kwargs, __self.as_data)
        if kind is Macro or (
            kind is types.BuiltinMethodType and __obj.__name__ not in _WRAPPED_ATTRIBUTES
        ):
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:
                return __context.environment.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        return super().call(__context, __obj, *args, **kwargs)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        safe = super().is_safe_attribute(obj, attr, value)
        if safe and attr not in _WRAPPED_ATTRIBUTES:
            self._allowed.add((type(obj), attr))
        return safe

    def getitem(self, obj: Any, argument: Any) -> Any:
        if type(obj) is dict and type(argument) is str:
            try:
                return obj[argument]
            except KeyError:
                pass
        return super().getitem(obj, argument)


def _join(values, separator: str = "") -> str:
    """``join`` that keeps data as data (Jinja's escapes it into Markup)."""
    items = ["" if v is None else plain_text(v) for v in values]
    if separator and len(items) * len(separator) > sandbox.MAX_VALUE:
        raise sandbox.too_large("join")
    return sandbox.check_size(separator.join(items))


def _fill(skeleton: str, slots: list[str], escape: bool) -> str:
    """The skeleton with each placeholder replaced by its value (HTML-escaped)."""
    pattern, highest = _fill_pattern(skeleton)
    if highest >= len(slots):  # a placeholder-like mark in the template's own text
        pattern, _ = _fill_pattern(skeleton, len(slots))
    return pattern.format(*([_html_escape(v) for v in slots] if escape else slots))


@functools.lru_cache(maxsize=8192)
def _fill_pattern(skeleton: str, count: int | None = None) -> tuple[str, int]:
    """The skeleton as a ``str.format`` pattern, made once per letter layout:
    ``{n}`` where placeholder n is (below ``count``, when given), every other
    brace doubled; and the highest placeholder number (-1 for none)."""
    pieces = skeleton.split(_OPEN)
    out = [_braces(pieces[0])]
    highest = -1
    for piece in pieces[1:]:
        index, closed, rest = piece.partition(_CLOSE)
        if closed and index.isdecimal() and (count is None or int(index) < count):
            number = int(index)
            highest = max(highest, number)
            out.append(f"{{{number}}}{_braces(rest)}")
        else:  # not a placeholder: the character came with the template's own text
            out.append(_braces(_OPEN + piece))
    return "".join(out), highest


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class Formats:
    """Babel formatting for one locale, with a cache: thresholds and benefits
    repeat across thousands of letters.

    Amounts of money (a partner's own figures, which rarely repeat) are
    formatted by *shape*: Babel formats one probe amount per sign and number
    of digits (``$123,456.78``), and every amount of that shape is written
    into the probe's digit positions (``$490,178.70``), about a tenth of
    Babel's time. A shape whose probe does not come back with exactly its
    digits, in order (other digits, other rounding), stays with Babel.
    """

    def __init__(self, locale: Locale, currency: str):
        self.locale = locale
        self.currency = currency
        self._cache: dict[tuple, str] = {}
        self._whole_money = copy.copy(parse_pattern(locale.currency_formats["standard"].pattern))
        self._whole_money.frac_prec = (0, 0)
        self._money_shapes: dict[tuple[bool, int, bool], str | None] = {}
        self._percent_patterns: dict[int, Any] = {}

    def value(self, kind: str, value: Any, decimals: int | None = None) -> str:
        """``value`` formatted as a ``kind``; percentages with at most
        ``decimals`` decimals (None: as many as the value has)."""
        key = (kind, value, decimals)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _FORMAT_CACHE_SIZE:  # partners' own figures rarely repeat
                self._cache.clear()
            found = self._cache[key] = self._format(kind, value, decimals)
        return found

    def _format(self, kind: str, value: Any, decimals: int | None = None) -> str:
        if value is None:
            return ""
        if kind == MONEY:
            return self._money(value)
        if kind == PERCENT:
            if decimals is not None:
                pattern = self._percent_patterns.get(decimals)
                if pattern is None:
                    pattern = copy.copy(parse_pattern(self.locale.percent_formats[None].pattern))
                    pattern.frac_prec = (0, decimals)
                    self._percent_patterns[decimals] = pattern
                return pattern.apply(value, self.locale)
            return format_percent(round(value, 6), locale=self.locale, decimal_quantization=False)
        if kind in (INTEGER, NUMBER):
            return format_decimal(round(value, 2), locale=self.locale, decimal_quantization=False)
        if kind == DATE:
            text = format_date(value, format="long", locale=self.locale)
            if value.day == 1 and self.locale.language == "fr" and text.startswith("1 "):
                text = "1er" + text[1:]  # French writes the first of a month as an ordinal
            return text
        if kind == LIST:
            return ", ".join(value)
        return str(value)

    def _money(self, value: float | int) -> str:
        whole = float(value).is_integer()
        if value == 0 or (not whole and round(value, 2) != value):  # -0.0; not in cents
            return self._babel_money(value)
        digits = f"{abs(value):.{0 if whole else 2}f}".replace(".", "")
        key = (value < 0, len(digits), whole)
        shape = self._money_shapes.get(key, "")
        if shape == "":
            shape = self._money_shapes[key] = self._money_shape(*key)
        return self._babel_money(value) if shape is None else shape.format(*digits)

    def _money_shape(self, negative: bool, length: int, whole: bool) -> str | None:
        """Babel's text for a probe amount of this shape, with ``{}`` for each digit."""
        probe = ("123456789" * (length // 9 + 1))[:length]
        amount = int(probe) if whole else int(probe) / 100
        text = self._babel_money(-amount if negative else amount)
        if [c for c in text if c in _ASCII_DIGITS] != list(probe):
            return None
        return "".join(
            "{}" if c in _ASCII_DIGITS else c.replace("{", "{{").replace("}", "}}") for c in text
        )

    def _babel_money(self, value: float | int) -> str:
        if float(value).is_integer():  # whole amounts without ".00"
            return self._whole_money.apply(
                value, self.locale, currency=self.currency, currency_digits=False
            )
        return format_currency(value, self.currency, locale=self.locale)


class LetterRenderer:
    """The templates of one folder, ready to render letters (one per process)."""

    def __init__(self, folder: str | Path, settings: LetterSettings, currency: str):
        self.folder = Path(folder)
        self.settings = settings
        self.currency = currency
        self._slots = _Slots()
        self.env = _LetterSandbox(
            loader=_FolderLoader(str(self.folder)),
            as_data=self._slots,
            undefined=StrictUndefined,
            autoescape=True,
            finalize=self._slots,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=-1,
        )  # a dict: each letter looks its base template up again
        ours = dict(
            money=self._formatter(MONEY),
            percent=self._formatter(PERCENT),
            number=self._formatter(NUMBER),
            date=self._formatter(DATE),
            value=self._value,
            term=self._term,
            requirement=self._requirement,
            human=in_words,
            join=_join,
            e=_no_escape,
            escape=_no_escape,
            safe=_no_escape,
            forceescape=_no_escape,
        )
        # Ours return plain text of bounded size, so they need no wrapping
        # (they are called most: a wrapper would cost a tenth of a letter).
        self.env.filters.update(ours)
        self.html_env = _LetterSandbox(
            loader=_FolderLoader(str(self.folder)),
            undefined=StrictUndefined,
            autoescape=True,
            auto_reload=False,
        )
        self._layout = self.html_env.get_template(HTML_LAYOUT)
        self._terms = {lang: load_terms(self.folder, lang) for lang in settings.languages}
        self._phrases = {lang: load_phrases(self.folder, lang) for lang in settings.languages}
        # A letter never mixes languages: one in a language whose terms.yaml
        # lacks a word the rules may need is written in the default language.
        self.untranslated = {
            lang: tuple(i for i in settings.needed_terms if i not in self._terms[lang])
            for lang in settings.languages
            if lang != settings.default_language
        }
        self._pages: dict[str, list[list[str]]] = {}
        self._formats: dict[str, Formats] = {}
        self._templates: dict[tuple[str, str], Any] = {}
        # The letter being rendered's formats and words, which the filters use.
        self._letter_formats = self.formats(settings.default_language, None)
        self._letter_terms = self._terms.get(settings.default_language, {})
        self._letter_phrases = self._phrases[settings.default_language]

    # --- choosing the template and the locale --------------------------------

    def template_for(self, kind: str, language: str):
        """(template, language used); the default language when ``language`` has
        no template for the kind, or lacks words for the rules (``untranslated``)."""
        key = (kind, language)
        found = self._templates.get(key)
        if found is None:
            name = f"{language}/{kind}{TEMPLATE_SUFFIX}"
            if (
                language in self.settings.languages
                and (self.folder / name).is_file()
                and not self.untranslated.get(language)
            ):
                found = (self.env.get_template(name), language)
            else:
                default = self.settings.default_language
                found = (self.env.get_template(f"{default}/{kind}{TEMPLATE_SUFFIX}"), default)
            # Its globals as a plain dict, not a ChainMap over the environment's
            # (which never change here): each letter's context copies them.
            found[0].globals = dict(found[0].globals)
            self._templates[key] = found
        return found

    def formats(self, language: str, country: str | None) -> Formats:
        key = f"{language}_{(country or '').upper()}"
        found = self._formats.get(key)
        if found is None:
            name = key if country and localedata.exists(key) else language
            try:
                locale = Locale.parse(name)
            except (UnknownLocaleError, ValueError):
                locale = Locale.parse(self.settings.default_language)
            found = self._formats[key] = Formats(locale, self.currency)
        return found

    # --- rendering -----------------------------------------------------------------

    def render(self, facts: LetterFacts) -> Letter:
        partner = facts.context["partner"]
        wanted = partner.get("language") or self.settings.default_language
        template, language = self.template_for(facts.kinds[0], wanted)
        formats = self.formats(language, partner.get("country"))
        slots: list[str] = []
        context = {
            **facts.context,
            "sender": self._sender(),
            "language": language,
            "fallback": language != wanted,
        }
        terms = self._terms.get(language, {})
        if terms:
            _translate_names(context, terms)
        self._letter_formats, self._letter_terms = formats, self._terms.get(language, {})
        default = self._phrases[self.settings.default_language]
        self._letter_phrases = self._phrases.get(language, default)
        self._slots.values = slots
        try:
            with sandbox.time_limit():
                jinja_context = template.new_context(context)
                skeleton = sandbox.check_letter(list(template.root_render_func(jinja_context)))
                subject_block = jinja_context.blocks.get("subject")
                subject_skeleton = (
                    sandbox.check_letter(list(subject_block[0](jinja_context)))
                    if subject_block
                    else ""
                )
        except Exception:  # noqa: BLE001 - a template's error: re-raised with template lines
            self.env.handle_exception()
        finally:
            self._slots.values = None
        subject = " ".join(_fill(subject_skeleton, slots, escape=False).split())
        return Letter(
            subject, skeleton, slots, self._page, language, language != wanted, str(formats.locale)
        )

    def _page(self, body: Markup, subject: str, language: str) -> str:
        """The HTML page around a letter's body (templates/letter.html.j2).

        The layout is rendered once per language with markers for the body and
        the subject, which each letter then fills in (escaped as Jinja would);
        a layout that transforms either is rendered for every letter instead.
        """
        parts = self._pages.get(language)
        if parts is None:
            page = self._layout.render(
                sender=self._sender(),
                body=Markup(_BODY_MARK),
                subject=_SUBJECT_MARK,
                language=language,
            )
            outer = page.split(_BODY_MARK)
            parts = self._pages[language] = (
                [piece.split(_SUBJECT_MARK) for piece in outer] if len(outer) == 2 else []
            )
        if not parts:
            return self._layout.render(
                sender=self._sender(), body=body, subject=subject, language=language
            )
        title = str(escape(subject))
        before, after = (title.join(pieces) for pieces in parts)
        return before + str(body) + after

    def _sender(self) -> dict:
        s = self.settings
        return {"name": s.sender_name, "email": s.sender_email, "signature": s.signature}

    # --- filters (the locale comes from the letter being rendered) -----------------
    # Plain functions, not pass_context ones: Jinja calls those through the
    # context, and looking the locale up there cost a tenth of a letter's rendering.

    def _formatter(self, kind: str):
        """A filter formatting values of one kind for the letter's locale."""

        def format_for_locale(value) -> str:
            return self._letter_formats.value(kind, value)

        return format_for_locale

    def requirement_text(self, requirement, language: str, country: str | None = None) -> str:
        """A requirement as a letter in ``language`` states it (the
        ``requirement`` filter outside a letter: for checks and tests)."""
        saved = self._letter_formats, self._letter_terms, self._letter_phrases
        self._letter_formats = self.formats(language, country)
        self._letter_terms = self._terms.get(language, {})
        self._letter_phrases = self._phrases[language]
        try:
            return self._requirement(requirement)
        finally:
            self._letter_formats, self._letter_terms, self._letter_phrases = saved

    def _requirement(self, requirement) -> str:
        """A requirement as a sentence in the letter's language (phrases.yaml)."""
        return self._letter_phrases.requirement(
            requirement, self._letter_formats.locale, self._value, self._term
        )

    def _value(self, value, kind: str | None = None, near: Any = None) -> str:
        """A rule value by its type; ``kind`` from a requirement's ``type``.
        Benefit values (``45%``, ``20000``) are shown as the rules wrote them.
        Percentages are rounded for reading (see :func:`percent_decimals`;
        ``near``: the threshold the value is compared with)."""
        if kind == PERCENT and isinstance(value, (int, float)):
            decimals = percent_decimals(value, near)
            return self._letter_formats.value(PERCENT, value, decimals)
        if kind == LIST and isinstance(value, (tuple, list)):
            words = [self._term(item) for item in value]
            return format_list(words, locale=self._letter_formats.locale) if words else ""
        if kind is None:
            if isinstance(value, bool):
                kind = BOOL
            elif isinstance(value, (int, float)):
                kind = NUMBER
            elif isinstance(value, dt.date):
                kind = DATE
            else:
                kind = "text"
        if kind == BOOL:
            word = "yes" if value else "no"
            return self._letter_terms.get(word, word)
        if kind in ("text", CHOICE) and isinstance(value, str):
            if _PERCENT_TEXT.match(value):  # a benefit written "45%"
                return self._letter_formats.value(PERCENT, float(value[:-1]) / 100)
            if _MONEY_TEXT.match(value):  # "$20,000": in the rule set's currency
                return self._letter_formats.value(MONEY, float(value[1:].replace(",", "")))
            return self._letter_terms.get(value, in_words(value))
        return self._letter_formats.value(kind, value)

    def _term(self, key: str, fallback: str | None = None) -> str:
        """The language's word for a rule id, else ``fallback``, else the id in words."""
        return self._letter_terms.get(key) or fallback or in_words(key)


_PROGRAM_KEYS = ("tier", "next_tier")
_PROGRAM_LISTS = ("programs", "enrolled", "dropped", "within_reach", "kept")


def _translate_names(context: dict, terms: dict[str, str]) -> None:
    """The language's names for the programs a letter names (terms.yaml,
    keyed by program id) and for the rule set (``rule_set``); the facts
    hold the rules' own names, shared by every letter, so each program is
    copied with its name replaced."""

    def named(program: dict | None) -> dict | None:
        if not program or program["id"] not in terms:
            return program
        return {**program, "name": terms[program["id"]]}

    context["rule_set"] = terms.get("rule_set", context["rule_set"])
    for key in _PROGRAM_KEYS:
        context[key] = named(context.get(key))
    for key in _PROGRAM_LISTS:
        if context.get(key):
            context[key] = [named(p) for p in context[key]]
    change = context.get("tier_change")
    if change:
        context["tier_change"] = {
            **change,
            "before": named(change.get("before")),
            "after": named(change.get("after")),
        }


def percent_decimals(value: float, near: float | None = None) -> int:
    """How many decimals a share is shown with: at most one (34.9768% reads
    35%; 32.66% reads 32.7%), more when the threshold it is compared with
    has more (12.25%), and more again, up to four, when fewer would make a
    value that misses the threshold read as the threshold itself (59.96%
    against 60% reads 59.96%, not 60%), or a value that is not zero read as
    zero (0.01%)."""
    wanted = 1 if near is None else max(1, _decimals(near * 100))
    if near is not None and value != near:
        while wanted < 4 and round(value * 100, wanted) == round(near * 100, wanted):
            wanted += 1
    while wanted < 4 and value and not round(value * 100, wanted):  # 0.01%, not 0%
        wanted += 1
    return wanted


def _decimals(number: float) -> int:
    """Decimals of a number as written on the six-decimal grid (12.25: 2)."""
    return len(f"{abs(number):.6f}".split(".")[1].rstrip("0"))


def _no_escape(value: Any) -> str:
    """Letters escape for their format themselves; in a template, escaping is a
    no-op, and ``|safe`` cannot turn data into markup."""
    return "" if value is None else str(value)


def in_words(key: Any) -> str:
    """A rule id as words: ``at_risk`` -> ``at risk`` (letters, the report)."""
    return str(key).replace("_", " ")


_renderers: dict[tuple, LetterRenderer] = {}


def renderer_for(
    folder: str | Path, settings: LetterSettings, currency: str, *, fresh: bool = False
) -> LetterRenderer:
    """This process's renderer for a templates folder: templates compiled once.

    ``fresh`` reads and compiles the templates again (the template check
    does), and the letters this process writes next use what was checked.
    Forked worker processes inherit the renderer, compiled and warm.
    """
    key = (str(folder), settings, currency)
    found = None if fresh else _renderers.get(key)
    if found is None:
        found = _renderers[key] = LetterRenderer(folder, settings, currency)
    return found


def kind_templates(folder: str | Path, language: str) -> list[str]:
    """The kinds that have a template in ``language``."""
    return [
        kind for kind in KINDS if (Path(folder) / language / f"{kind}{TEMPLATE_SUFFIX}").is_file()
    ]


def template_error_place(error: Exception) -> tuple[str | None, int | None, str]:
    """(template file, line, message) of a template error, from its own or its
    traceback's line; file and line are None when no template line is known."""
    if isinstance(error, TemplateSyntaxError) and error.filename:
        return error.filename, error.lineno, error.message or str(error)
    file = line = None
    trace = error.__traceback__
    while trace is not None:
        name = trace.tb_frame.f_code.co_filename
        if name.endswith(".j2"):
            file, line = name, trace.tb_lineno
        trace = trace.tb_next
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return file, line, message


def describe_template_error(error: Exception) -> str:
    """'file:line: message' for a template error (see :func:`template_error_place`)."""
    file, line, message = template_error_place(error)
    return f"{file}:{line}: {message}" if file else message
