"""What a partner's letter says: its kinds and the facts it is built from.

A letter is built from a partner's decisions in a run, the changes since
the previous run, and the partner's values. This module decides which
kinds of letter apply (welcome, tier change, warning, ...) and gathers the
facts in plain Python values: nothing here is formatted or translated, that
is the templates' job (see :mod:`engine.letters.rendering`).

Requirements ("needs 10 certified technical staff, has 8, 2 short") come
from the rule model evaluated over the partner's values by the one walker of
conditions that runs and the explainer use too
(:mod:`engine.evaluate.requirements`), so a warning names exactly the
condition the rules hold against the partner.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.evaluate.changes import Change
from engine.evaluate.requirements import actionable, held, unmet
from engine.letters.settings import LetterSettings
from engine.ruleset.conditions import Compare, Condition
from engine.ruleset.model import ENGAGEMENT, RuleSet, per_part, per_rule_set
from engine.ruleset.value_types import NUMERIC

# The kinds of letter, most pressing first: the first that applies is the
# letter's main kind and chooses its template and subject.
KINDS = ("welcome", "probation", "at_risk", "tier_change", "removed", "enrolled", "status")
MAX_WITHIN_REACH = 3  # programs a letter without tiers names as next steps


def _requirement_parts(ruleset: RuleSet, condition: Compare) -> dict:
    """What a requirement (one comparison as data a template can phrase in any
    language) says whatever the partner's value; ``actual`` and ``short`` are
    added per partner."""
    vtype = ruleset.type_of(condition.name)
    return {
        "name": condition.name,
        "label": ruleset.label_of(condition.name),
        "type": vtype.kind if vtype else "text",
        "op": condition.op,
        "choices": tuple(condition.values),  # shared by every letter: immutable
        "threshold": condition.values[0] if condition.values else None,
    }


def _short(condition: Compare, value: Any, numeric: bool) -> Any:
    """How much is missing for a threshold (``>=``, ``>``, ``<=``, ``<``), or None."""
    if not numeric or value is None or condition.op not in (">=", ">", "<=", "<"):
        return None
    gap = (
        condition.values[0] - value if condition.op in (">=", ">") else value - condition.values[0]
    )
    return gap if gap > 0 else None


def leaves(
    ruleset: RuleSet,
    condition: Condition,
    values: Mapping[str, Any],
    as_of: dt.date,
    *,
    holding: bool,
) -> list[dict]:
    """The comparisons that make ``condition`` fail (``holding=False``), or that
    make it hold (``holding=True``), as requirements: ``name``, ``label``,
    ``type``, ``op``, ``choices``, ``threshold``, ``actual``, ``short``.

    They come from the one walker of conditions
    (:mod:`engine.evaluate.requirements`), which runs and ``explain`` use too;
    :func:`~engine.evaluate.requirements.actionable` keeps what a letter
    talks about (the nearest way into an ``any`` that fails; no missing-value
    checks or negated parts).
    """
    walk = held if holding else unmet
    found = actionable(walk(ruleset, condition)(values, as_of), met=holding)
    if not found:
        return []
    result = []
    for item in found:
        leaf = item.condition
        fixed = per_part(
            "letter_requirements", ruleset, leaf, lambda part: _requirement_parts(ruleset, part)
        )
        numeric = fixed["type"] in NUMERIC
        result.append({**fixed, "actual": item.value, "short": _short(leaf, item.value, numeric)})
    return result


@dataclass(frozen=True)
class LetterFacts:
    """Everything a letter can say about one partner, unformatted."""

    kinds: tuple[str, ...]
    context: dict


def letter_facts(
    ruleset: RuleSet,
    settings: LetterSettings,
    values: Mapping[str, Any],
    decision: Mapping[str, Any],
    changes: Iterable[Change],
    as_of: dt.date,
    previous_run: int | None,
) -> LetterFacts:
    """The kinds of letter that apply and the template context (unformatted).

    ``decision`` is the partner's line of decisions.jsonl; ``values`` its
    fields and metrics (:func:`engine.evaluate.decide.partner_values`).
    """
    classifications = decision["classifications"]
    enrolled = list(decision["programs"])
    known = dict(values)
    known.update(classifications)
    known[ENGAGEMENT] = decision["engagement_model"]
    known.update({p.id: p.id in enrolled for p in ruleset.programs})
    changes = list(changes)

    standing = classifications.get(settings.standing_table) if settings.standing_table else None
    warning = (
        "probation"
        if standing in settings.probation
        else "at_risk"
        if standing in settings.at_risk
        else None
    )
    standing_reasons: list[dict] = []
    if warning:
        table = next(t for t in ruleset.classifications if t.name == settings.standing_table)
        decided_by = decision.get("decided_by", {}).get(table.name, "default")
        if decided_by.startswith("row "):
            row = table.rows[int(decided_by[4:]) - 1]
            standing_reasons = leaves(ruleset, row.when, known, as_of, holding=True)

    kept_by = decision.get("kept") or {}
    programs = [_program(ruleset, pid, kept_by.get(pid)) for pid in enrolled]
    kept = [
        {
            **program,
            "missing": leaves(
                ruleset, ruleset.program(program["id"]).when, known, as_of, holding=False
            ),
        }
        for program in programs
        if program["kept"]
    ]
    tier = next(
        (p for p in programs if settings.tier_group and p["group"] == settings.tier_group), None
    )
    next_tier = _next_tier(ruleset, settings, tier, known, as_of)
    within_reach = [] if settings.tier_group else _within_reach(ruleset, enrolled, known, as_of)

    news = _news(ruleset, settings, changes, known, as_of)
    kinds = [
        kind
        for kind, applies in (
            ("welcome", news["new_partner"]),
            ("probation", warning == "probation"),
            ("at_risk", warning == "at_risk"),
            ("tier_change", bool(news["tier_change"] or news["engagement_change"])),
            ("removed", bool(news["dropped"])),
            ("enrolled", bool(news["enrolled"])),
            ("status", True),
        )
        if applies
    ]
    context = {
        "kind": kinds[0],
        "kinds": kinds,
        "as_of": as_of,
        "rule_set": ruleset.name,
        "previous_run": previous_run,
        "partner": {
            "id": decision["partner_id"],
            **{name: values.get(name) for name in ruleset.fields},
        },
        "classifications": [
            {"table": t.name, "label": t.label, "value": classifications[t.name]}
            for t in ruleset.classifications
        ],
        "standing": {
            "table": settings.standing_table,
            "value": standing,
            "warning": warning,
            "reasons": standing_reasons,
        },
        # None for a rule set without an engagement section.
        "engagement": per_rule_set("letter_engagement", ruleset, _engagements)[
            decision["engagement_model"]
        ]
        if ruleset.engagement_declared
        else None,
        "programs": programs,
        # The programs memory keeps the partner in although it does not
        # qualify now, each with its 'kept' (how: grace, protection or
        # renewal; until: the date it ends; since) and what it misses.
        "kept": kept,
        "tier": tier,
        "next_tier": next_tier,
        "within_reach": within_reach,
        "changed": bool(changes),
        **news,
    }
    return LetterFacts(tuple(kinds), context)


# What letters say of a program or an engagement model is the same in every
# letter: made once per rule set and shared (the sandbox cannot change it).


def _program(ruleset: RuleSet, program_id: str, kept: Mapping | None = None) -> dict:
    """What letters say of a program; for one the partner holds, ``kept``
    (from decisions.jsonl) says whether memory keeps it there, and until when."""
    shared = per_rule_set("letter_programs", ruleset, _programs)[program_id]
    if kept is None:
        return shared
    return {
        **shared,
        "kept": {
            "how": kept["by"],
            "until": dt.date.fromisoformat(kept["until"]),
            "since": dt.date.fromisoformat(kept["since"]),
        },
    }


def _programs(ruleset: RuleSet) -> dict[str, dict]:
    return {
        program.id: {
            "id": program.id,
            "name": program.name,
            "description": program.description,
            "group": program.group,
            "benefits": [{"key": k, "value": v} for k, v in program.benefits.items()],
            "kept": None,
        }
        for program in ruleset.programs
    }


def _engagements(ruleset: RuleSet) -> dict[str, dict]:
    return {
        model.id: {
            "id": model.id,
            "name": model.name,
            "description": model.description,
            "resources": [{"key": k, "value": v} for k, v in model.resources.items()],
        }
        for model in ruleset.engagement_models.values()
    }


def _next_tier(
    ruleset: RuleSet,
    settings: LetterSettings,
    tier: dict | None,
    known: Mapping[str, Any],
    as_of: dt.date,
) -> dict | None:
    """The next program up in the tier group and what the partner still misses."""
    if not settings.tier_group:
        return None
    members = ruleset.group_members(settings.tier_group)  # highest priority first
    current = next((m for m in members if tier and m.id == tier["id"]), None)
    above = [m for m in members if current is None or m.priority > current.priority]
    for program in reversed(above):  # the lowest one above the current tier
        if not program.in_effect(as_of) or program.when is None:
            continue
        missing = leaves(ruleset, program.when, known, as_of, holding=False)
        if missing:
            # What the partner can act on: not an invitation or a manager's
            # hold (fields marked actionable: false), nor a classification
            # value, which the letter explains by its own reasons.
            steps = [r for r in missing if _actionable(ruleset, r["name"])]
            return {**_program(ruleset, program.id), "missing": steps}
    return None


def _within_reach(
    ruleset: RuleSet, enrolled: list[str], known: Mapping[str, Any], as_of: dt.date
) -> list[dict]:
    """For a rule set without tiers, the next steps: the programs the partner
    could join by what it can change itself (every program it requires held,
    every condition missed actionable), fewest steps first, at most
    MAX_WITHIN_REACH."""
    found = []
    for order, program in enumerate(ruleset.programs):
        if (
            program.id in enrolled
            or program.group
            or program.when is None
            or not program.in_effect(as_of)
            or not set(program.requires) <= set(enrolled)
        ):
            continue
        missing = leaves(ruleset, program.when, known, as_of, holding=False)
        if missing and all(_actionable(ruleset, r["name"]) for r in missing):
            found.append(
                (len(missing), order, {**_program(ruleset, program.id), "missing": missing})
            )
    return [entry for *_, entry in sorted(found, key=lambda f: f[:2])[:MAX_WITHIN_REACH]]


def _actionable(ruleset: RuleSet, name: str) -> bool:
    field = ruleset.fields.get(name)
    if field is not None:
        return field.actionable
    return name not in {t.name for t in ruleset.classifications} and name != ENGAGEMENT


def _news(
    ruleset: RuleSet,
    settings: LetterSettings,
    changes: list[Change],
    known: Mapping[str, Any],
    as_of: dt.date,
) -> dict:
    """Changes since the previous run, as facts for the letter."""
    grouped = {p.id for p in ruleset.programs if p.group}
    news: dict[str, Any] = {
        "new_partner": False,
        "tier_change": None,
        "engagement_change": None,
        "classification_changes": [],
        "enrolled": [],
        "dropped": [],
    }
    for change in changes:
        if change.change == "new_partner":
            news["new_partner"] = True
        elif change.change == "group_change" and change.subject == settings.tier_group:
            news["tier_change"] = {
                "before": _program(ruleset, change.before) if change.before else None,
                "after": _program(ruleset, change.after) if change.after else None,
                "direction": change.direction,
            }
        elif change.change == "engagement_model":
            news["engagement_change"] = {
                "before": ruleset.engagement_models[change.before].name,
                "after": ruleset.engagement_models[change.after].name,
                "before_id": change.before,
                "after_id": change.after,
                "direction": change.direction,
            }
        elif change.change == "classification":
            news["classification_changes"].append(
                {
                    "table": change.subject,
                    "label": ruleset.label_of(change.subject),
                    "before": change.before,
                    "after": change.after,
                    "direction": change.direction,
                }
            )
        elif change.change == "enrolled" and change.subject not in grouped:
            news["enrolled"].append(_program(ruleset, change.subject))
        elif change.change == "dropped" and change.subject not in grouped:
            program = ruleset.program(change.subject)
            reasons = (
                []
                if program.when is None
                else leaves(ruleset, program.when, known, as_of, holding=False)
            )
            news["dropped"].append(
                {
                    **_program(ruleset, program.id),
                    "reasons": reasons,
                    "ended": not program.in_effect(as_of),
                }
            )
    return news
