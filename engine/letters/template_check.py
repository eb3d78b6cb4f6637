"""Checking letter templates before a run: render every one, report every error.

Every template of every language is rendered for sample partners (the first
partners of a roster, decided by the rules) twice: as they are, and with one
change of every kind since a made-up previous run. A syntax error, an
undefined name, or a failing filter is reported as ``template:line:
message`` together with the letter settings' own problems, before any
partner is decided. So are the parts of a template that Jinja2 would drop
without a word (text outside the blocks of a template that extends another,
blocks its layout lacks), and raw HTML, which HTML letters leave out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, TemplateSyntaxError, nodes

from engine.data.readers import read_columns, read_rows
from engine.errors import DataError, Problem, RuleSetError, UsageError
from engine.evaluate.changes import Change
from engine.evaluate.decide import Evaluator, decision_record, partner_values
from engine.evaluate.explain import program_failures
from engine.evaluate.records import (
    PARTNER_ID,
    QUARTER,
    Partner,
    build_history,
    clean_partner_id,
    field_values,
    read_partner_id,
)
from engine.letters.facts import KINDS, LetterFacts, letter_facts
from engine.letters.rendering import (
    TEMPLATE_SUFFIX,
    kind_templates,
    renderer_for,
    template_error_place,
)
from engine.letters.settings import LetterSettings, load_letter_settings
from engine.ruleset.memory import Enrolled, Memory
from engine.ruleset.model import ENGAGEMENT, RuleSet

SAMPLE_PARTNERS = 50
MAX_HISTORY_BYTES = 50_000_000  # larger history files are not scanned for the samples


@dataclass(frozen=True)
class TemplateCheck:
    templates: int
    languages: tuple[str, ...]
    partners: int
    missing: tuple[tuple[str, str], ...]  # (language, kind) without a template
    # Per language, the rule ids its terms.yaml has no word for: its letters
    # are written in the default language until they are added.
    untranslated: dict[str, tuple[str, ...]] = field(default_factory=dict)
    default_language: str = ""


def check_templates(
    ruleset: RuleSet,
    folder: str | Path,
    roster: str | Path | None,
    performance: str | Path | None,
    as_of: dt.date | None = None,
) -> TemplateCheck:
    """Render every template for sample partners; raise RuleSetError listing
    every problem found."""
    folder = Path(folder)
    if not folder.is_dir():  # a usage mistake (exit 2)
        raise UsageError(
            f"{folder}: no such templates folder; give --templates (or templates in "
            "eligibility.toml); 'eligibility run --no-letters' decides without letters"
        )
    settings = load_letter_settings(folder, ruleset)
    try:
        renderer = renderer_for(folder, settings, ruleset.currency, fresh=True)
    except TemplateSyntaxError as error:  # the HTML layout, read as the renderer starts
        raise RuleSetError(
            [Problem(error.filename or str(folder), error.lineno, 0, error.message or "error")],
            "the letter templates",
        ) from None
    as_of = as_of or dt.date.today()
    samples, partners = _samples(ruleset, settings, roster, performance, as_of)
    problems: set[Problem] = set()
    missing = []
    count = 0
    layouts: dict[str, list[str] | None] = {}  # each layout's block names, read once
    for language in settings.languages:
        present = kind_templates(folder, language)
        missing += [(language, kind) for kind in KINDS if kind not in present]
        for kind in present:
            count += 1
            name = f"{language}/{kind}{TEMPLATE_SUFFIX}"
            try:
                renderer.env.get_template(name)
            except TemplateSyntaxError as error:
                problems.add(
                    Problem(
                        error.filename or name, error.lineno, 0, error.message or "syntax error"
                    )
                )
                continue
            problems.update(_never_shown(renderer.env, folder, name, layouts))
            for facts in samples:
                context = dict(facts.context)
                context["partner"] = {**context["partner"], "language": language}
                try:
                    letter = renderer.render(LetterFacts((kind, *facts.kinds), context))
                except Exception as error:  # noqa: BLE001 - any template error, located
                    problems.add(_problem(error, name))
                    break
                if letter.loses_raw_html:
                    problems.add(_raw_html_problem(folder, name, language))
                    break
    for language, kind in missing:
        if language == settings.default_language:
            problems.add(
                Problem(
                    str(folder / language),
                    1,
                    0,
                    f"no template {kind}{TEMPLATE_SUFFIX} in the default language; "
                    f"every kind needs one there ({', '.join(KINDS)})",
                )
            )
    if problems:
        raise RuleSetError(problems, "the letter templates")
    untranslated = {lang: ids for lang, ids in renderer.untranslated.items() if ids}
    return TemplateCheck(
        count,
        settings.languages,
        partners,
        tuple(missing),
        untranslated,
        settings.default_language,
    )


def _never_shown(
    env: Environment, folder: Path, name: str, layouts: dict[str, list[str] | None]
) -> list[Problem]:
    """Parts of a template that extends another which Jinja2 silently drops:
    text outside any block, and blocks its layout does not have (a misspelt
    block name)."""
    tree = env.parse(env.loader.get_source(env, name)[0])
    parent = _layout_of(tree)
    if parent is None:
        return []
    path = str(folder / name)
    problems = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            continue
        shown = [
            part
            for part in node.nodes
            if not (isinstance(part, nodes.TemplateData) and not part.data.strip())
        ]
        if shown:
            first = shown[0]
            line = first.lineno
            if isinstance(first, nodes.TemplateData):  # the line of its first visible character
                data = first.data
                line += data[: len(data) - len(data.lstrip())].count("\n")
            problems.append(
                Problem(
                    path,
                    line,
                    0,
                    "text outside any {% block %} is never "
                    "shown in a template that extends another; move it into "
                    "a block",
                )
            )
    uses_self = any(node.name == "self" for node in tree.find_all(nodes.Name))
    if parent not in layouts:
        layouts[parent] = _block_names(env, parent)
    known = None if uses_self else layouts[parent]  # self.x() shows any block
    for block in tree.body:
        if isinstance(block, nodes.Block) and known is not None and block.name not in known:
            problems.append(
                Problem(
                    path,
                    block.lineno,
                    0,
                    f"block '{block.name}' is not in "
                    f"{parent}, so it is never shown; its blocks are: "
                    f"{', '.join(known)}",
                )
            )
    return problems


def _block_names(env: Environment, name: str, depth: int = 0) -> list[str] | None:
    """The blocks of a layout and of the layouts it extends (None: not known)."""
    try:
        tree = env.parse(env.loader.get_source(env, name)[0])
    except Exception:  # noqa: BLE001 - a missing or broken layout is reported on its own
        return None
    names = [block.name for block in tree.find_all(nodes.Block)]
    parent = _layout_of(tree)
    if parent is not None:
        above = _block_names(env, parent, depth + 1) if depth < 10 else None
        if above is None:
            return None
        names += [n for n in above if n not in names]
    return names


def _layout_of(tree: nodes.Template) -> str | None:
    """The template a template extends (``{% extends "de/base.md.j2" %}``), if named."""
    return next(
        (
            node.template.value
            for node in tree.body
            if isinstance(node, nodes.Extends) and isinstance(node.template, nodes.Const)
        ),
        None,
    )


# Where a template's raw HTML probably is: a tag, a comment, or a declaration.
_HTML_LIKE = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>|<!--|<\?|<![A-Za-z]")


def _raw_html_problem(folder: Path, name: str, language: str) -> Problem:
    """The template (or its language's base) line with raw HTML, which HTML
    letters would silently leave out while text letters show it."""
    message = (
        "raw HTML is left out of HTML letters; write it in Markdown (or, for a "
        "'<' shown as it is, write '\\<')"
    )
    for candidate in (name, f"{language}/base{TEMPLATE_SUFFIX}"):
        path = folder / candidate
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, 1):
                if _HTML_LIKE.search(line):
                    return Problem(str(path), number, 0, message)
    return Problem(str(folder / name), 1, 0, message)


def _problem(error: Exception, name: str) -> Problem:
    file, line, message = template_error_place(error)
    if file is not None and line is not None:
        return Problem(file, line, 0, message)
    return Problem(name, 1, 0, message)


def _samples(
    ruleset: RuleSet, settings: LetterSettings, roster, performance, as_of: dt.date
) -> tuple[list[LetterFacts], int]:
    """Letter facts for the roster's first partners, without and with changes
    (and the first of them again, kept by memory), and how many partners."""
    partners = []
    seen: set[str] = set()
    if roster is not None and Path(roster).is_file():
        for row in read_rows(roster, ruleset.fields):
            if row.problem:
                continue
            try:
                partner_id = read_partner_id(row.record)
            except DataError:
                continue
            values, problems = field_values(ruleset, row.record)
            if not problems and partner_id not in seen:
                seen.add(partner_id)
                partners.append((partner_id, values))
            if len(partners) >= SAMPLE_PARTNERS:
                break
    if not partners:  # no roster: one partner with every field's default
        values = {name: f.default for name, f in ruleset.fields.items()}
        partners.append(("SAMPLE-1", values))
    histories = _histories(ruleset, {pid for pid, _ in partners}, performance)
    people = [
        Partner(pid, values, histories.get(pid, build_history(ruleset, [])))
        for pid, values in partners
    ]
    count = len(people)
    if ruleset.keeping_programs:
        # The first partner again, having held every program that keeps
        # partners until yesterday: its letters show what memory keeps.
        yesterday = as_of - dt.timedelta(days=1)
        memory = Memory(
            enrollments=tuple(
                Enrolled(p.id, yesterday, yesterday) for p in ruleset.keeping_programs
            )
        )
        first = people[0]
        people.append(
            dataclasses.replace(first, partner_id=f"{first.partner_id}-kept", memory=memory)
        )
    evaluator = Evaluator(ruleset)
    decisions = evaluator.decide(people, as_of)
    samples = []
    for partner, decision in zip(people, decisions):
        values = partner_values(ruleset, partner, as_of)
        missed = program_failures(ruleset, values, decision, as_of)
        record = decision_record(ruleset, 0, decision, missed, values)
        for changes in ((), _every_change(ruleset, settings, partner.partner_id, decision)):
            samples.append(letter_facts(ruleset, settings, values, record, changes, as_of, 1))
    return samples, count


def _histories(ruleset: RuleSet, ids: set[str], performance) -> dict:
    if (
        performance is None
        or not Path(performance).is_file()
        or Path(performance).stat().st_size > MAX_HISTORY_BYTES
    ):
        return {}
    columns = [QUARTER, *ruleset.figures]
    rows: dict[str, list] = {}
    for _, values in read_columns(performance, [PARTNER_ID, *columns]):  # C speed for CSV
        partner_id = clean_partner_id(values[0])
        if partner_id in ids:
            rows.setdefault(partner_id, []).append(dict(zip(columns, values[1:])))
    found = {}
    for partner_id, records in rows.items():
        try:
            found[partner_id] = build_history(ruleset, records)
        except DataError:
            continue
    return found


def _every_change(
    ruleset: RuleSet, settings: LetterSettings, partner_id: str, decision
) -> tuple[Change, ...]:
    """One change of every kind, so that every branch of a template runs."""
    changes = [Change(partner_id, "new_partner", "", "", "", "")]
    if settings.tier_group:
        members = ruleset.group_members(settings.tier_group)
        current = next((m for m in members if m.id in decision.enrolled), members[-1])
        other = next((m for m in members if m.id != current.id), current)
        changes.append(
            Change(partner_id, "group_change", settings.tier_group, other.id, current.id, "up")
        )
    models = list(ruleset.engagement_models)
    other_model = next((m for m in models if m != decision.engagement), decision.engagement)
    changes.append(
        Change(partner_id, "engagement_model", ENGAGEMENT, other_model, decision.engagement, "down")
    )
    for table in ruleset.classifications:
        value = decision.classifications[table.name]
        other_value = next((v for v in table.values if v != value), value)
        changes.append(
            Change(partner_id, "classification", table.name, other_value, value, "changed")
        )
    loose = [p for p in ruleset.programs if not p.group]
    for program in loose:
        if program.id in decision.enrolled:
            changes.append(Change(partner_id, "enrolled", program.id, "", program.id, ""))
        else:
            changes.append(Change(partner_id, "dropped", program.id, program.id, "", ""))
    return tuple(changes)
