"""Decide partners with durable_rules: the library's main entry point.

``Evaluator(ruleset).decide(partners, as_of)`` computes each partner's
metrics, turns the partner into a fact, and lets the compiled rules in
durable_rules make every decision by forward chaining.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.evaluate.compiler import (
    AS_OF,
    PARTNER,
    ROW_PREFIX,
    VALUE_PREFIX,
    CompiledRules,
    attr,
    compile_rules,
    count_attr,
    encode,
    kept_input,
)
from engine.evaluate.durable_adapter import DurableEngine
from engine.evaluate.records import Partner
from engine.ruleset.memory import Keep, Memory, keep_offer
from engine.ruleset.metrics import Env, compile_expression, evaluate, round_value
from engine.ruleset.model import ENGAGEMENT, RuleSet, per_part
from engine.ruleset.quarters import Quarter
from engine.ruleset.value_types import DATE, LIST

NAME_FIELD = "partner_name"  # the field decisions.jsonl names a partner by, when declared
OFFERS = "_offers"  # a partner's record: what memory would keep it in (never read by a rule)


@dataclass(frozen=True)
class Decision:
    """Everything decided for one partner."""

    partner_id: str
    classifications: Mapping[str, str]
    rows: Mapping[str, int]  # which row decided each table (-1: the default)
    engagement: str
    enrolled: tuple[str, ...]  # program ids, in rule-set order
    # Programs enrolled although their conditions do not hold: memory keeps
    # the partner in them (grace, protection, renewal), until when and how.
    kept: Mapping[str, Keep] = field(default_factory=dict)

    def to_json(self) -> dict:
        found = {
            "partner_id": self.partner_id,
            "classifications": dict(self.classifications),
            "engagement_model": self.engagement,
            "programs": list(self.enrolled),
        }
        if self.kept:
            found["kept"] = {pid: keep.to_json() for pid, keep in self.kept.items()}
        return found


def keep_offers(ruleset: RuleSet, memory: Memory, as_of: dt.date) -> dict[str, Keep]:
    """The programs whose keeping would keep this partner on ``as_of`` should
    their conditions not hold (engine.ruleset.memory), and until when."""
    if not ruleset.keeping_programs:
        return {}
    memory = memory.before(as_of)
    offers = {}
    for program in ruleset.keeping_programs:
        offer = keep_offer(program.keeping, program.id, memory, as_of)
        if offer is not None:
            offers[program.id] = offer
    return offers


def partner_values(
    ruleset: RuleSet,
    partner: Partner,
    as_of: dt.date,
    compiled: Sequence | None = None,
    through: Quarter | None = None,
) -> dict[str, Any]:
    """Field values, parameters, and every metric, computed in dependency order.

    ``compiled`` holds the metrics' closures (see :meth:`Evaluator.values`);
    without it the expression trees are interpreted, as the explainer does.
    History metrics look back from ``through`` (default: the last quarter
    complete on ``as_of``; see :func:`engine.ruleset.quarters.figures_through`).
    """
    values = _with_parameters(ruleset, partner.values)
    env = Env(values, partner.history, as_of, through, memory=partner.memory.before(as_of))
    if compiled is None:
        for metric in ruleset.metrics:
            values[metric.name] = round_value(metric.type, evaluate(metric.expr, env))
    else:
        for metric, function in zip(ruleset.metrics, compiled):
            values[metric.name] = round_value(metric.type, function(env))
    return values


def recorded_values(
    ruleset: RuleSet, fields: Mapping[str, Any], metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """:func:`partner_values` from a partner's fields and the metrics its run
    recorded in decisions.jsonl, where dates are ISO text and lists arrays.

    Letters use this: they say what the rules decided on, without reading the
    history again.
    """
    values = _with_parameters(ruleset, fields)
    for metric in ruleset.metrics:
        value = metrics[metric.name]
        if value is not None:
            kind = metric.type.kind
            if kind == DATE:
                value = dt.date.fromisoformat(value)
            elif kind == LIST:
                value = tuple(value)
        values[metric.name] = value
    return values


def decision_record(
    ruleset: RuleSet,
    row: int,
    decision: Decision,
    missed: Mapping[str, list[str]],
    values: Mapping[str, Any],
) -> dict:
    """A partner's record in decisions.jsonl: the decisions, why each program
    was missed, and the metrics they were decided on (``values``: see
    :func:`partner_values`; letters read them back with
    :func:`recorded_values`)."""
    return {
        "partner_id": decision.partner_id,
        # The partner's name, for people reading the outputs (the report),
        # when the rules have a partner_name field.
        **({"partner_name": values.get(NAME_FIELD)} if NAME_FIELD in ruleset.fields else {}),
        "row": row,
        "classifications": dict(decision.classifications),
        "decided_by": {
            name: "default" if index < 0 else f"row {index + 1}"
            for name, index in decision.rows.items()
        },
        "engagement_model": decision.engagement,
        "programs": list(decision.enrolled),
        "kept": {pid: keep.to_json() for pid, keep in decision.kept.items()},
        "not_enrolled": dict(missed),
        "metrics": {metric.name: values[metric.name] for metric in ruleset.metrics},
        "rule_set_fingerprint": ruleset.fingerprint,
    }


def _with_parameters(ruleset: RuleSet, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A partner's field values and the rule set's parameters: what metrics see."""
    values: dict[str, Any] = dict(fields)
    values.update({name: p.value for name, p in ruleset.parameters.items()})
    return values


def compile_metrics(ruleset: RuleSet) -> list:
    """The rule set's metrics as closures, in order (see :func:`partner_values`)."""
    return [compile_expression(m.expr) for m in ruleset.metrics]


def compiled_rules(ruleset: RuleSet) -> CompiledRules:
    """The rule set compiled for durable_rules, once per process (a run compiles
    it before starting its workers, and forked workers inherit it)."""
    return per_part("compiled_rules", ruleset, ruleset, compile_rules)


class Evaluator:
    """A rule set compiled into durable_rules, ready to decide partners."""

    def __init__(self, ruleset: RuleSet, batch_size: int | None = None):
        self.ruleset = ruleset
        self.compiled: CompiledRules = compiled_rules(ruleset)
        kwargs = {"batch_size": batch_size} if batch_size else {}
        self.engine = DurableEngine(self.compiled, **kwargs)
        self.metric_functions = compile_metrics(ruleset)
        # (value name, fact attribute, list size attribute) of each input
        self._inputs = [
            (a[len(VALUE_PREFIX) :], a, count_attr(a[len(VALUE_PREFIX) :]))
            for a in self.compiled.inputs
        ]
        tables = [t.name for t in ruleset.classifications]
        # (name, fact attribute) of each decision a final fact holds
        self._names = (
            [(t, attr(t)) for t in tables],
            [(t, ROW_PREFIX + t) for t in tables + [ENGAGEMENT]],
            [(p.id, attr(p.id)) for p in ruleset.programs],
        )
        self._qualifies = dict(self.compiled.qualifies)

    def values(
        self, partner: Partner, as_of: dt.date, through: Quarter | None = None
    ) -> dict[str, Any]:
        """The partner's fields and metrics, with the compiled metric closures."""
        return partner_values(self.ruleset, partner, as_of, self.metric_functions, through)

    def fact(self, partner: Partner, values: Mapping[str, Any], as_of: dt.date) -> dict:
        fact: dict[str, Any] = {PARTNER: partner.partner_id, AS_OF: encode(as_of)}
        for name, attribute, count in self._inputs:
            value = values.get(name)
            if value is not None:
                fact[attribute] = encode(value)
                if type(value) is tuple:
                    fact[count] = len(value)
        if self._qualifies:
            offers = keep_offers(self.ruleset, partner.memory, as_of)
            if offers:
                # The engine reads the yes/no inputs; the offers stay with the
                # partner's record (no rule reads them) for _decision.
                fact.update((attr(kept_input(pid)), True) for pid in offers)
                fact[OFFERS] = offers
        return fact

    def decide(
        self, partners: Sequence[Partner], as_of: dt.date, through: Quarter | None = None
    ) -> list[Decision]:
        """Decisions for each partner, in the order given."""
        facts = [self.fact(p, self.values(p, as_of, through), as_of) for p in partners]
        return self.decide_facts(facts)

    def decide_facts(self, facts: Iterable[dict]) -> list[Decision]:
        facts = list(facts)
        finals = self.engine.decide(facts)
        return [self._decision(finals[f[PARTNER]]) for f in facts]

    def _decision(self, final: Mapping[str, Any]) -> Decision:
        tables, rows, programs = self._names
        enrolled = tuple(p for p, a in programs if final.get(a) is True)
        offers = final.get(OFFERS)
        kept = {}
        if offers:
            kept = {
                pid: offer
                for pid, offer in offers.items()
                if pid in enrolled and final[self._qualifies[pid]] is False
            }
        return Decision(
            partner_id=final[PARTNER],
            classifications={t: final[a] for t, a in tables},
            rows={t: int(final[a]) for t, a in rows},
            engagement=final[attr(ENGAGEMENT)],
            enrolled=enrolled,
            kept=kept,
        )
