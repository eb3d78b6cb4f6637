"""Plain-text rendering of decisions and explanations for a terminal."""
from __future__ import annotations

from .decide import Decision
from .explain import Check, Explanation, ProgramExplanation, TableExplanation
from .model import RuleSet


def explanation_text(ruleset: RuleSet, decision: Decision, explanation: Explanation,
                     partner_name: str | None = None) -> str:
    lines: list[str] = []
    title = f"Partner {decision.partner_id}" + (f" ({partner_name})" if partner_name else "")
    lines += [f"{title}, as of {explanation.as_of}",
              f"Rule set: {ruleset.name} (fingerprint {ruleset.fingerprint})", ""]
    lines.append("Classifications")
    for table in explanation.classifications:
        lines += _table(table)
    model = ruleset.engagement_models[decision.engagement]
    lines += ["", f"Engagement model: {model.name} ({model.id})"]
    lines += _table(explanation.engagement, heading=False)
    for key, value in model.resources.items():
        lines.append(f"    {key.replace('_', ' ')}: {_plain(value)}")
    lines += ["", "Programs"]
    for program in explanation.programs:
        lines += _program(program)
    lines += ["", "Values used"]
    width = max(len(n) for n in explanation.values) if explanation.values else 0
    for name, value in explanation.values.items():
        lines.append(f"  {name.ljust(width)}  {value}")
    return "\n".join(lines)


def _table(table: TableExplanation, heading: bool = True) -> list[str]:
    lines = []
    decided = "default" if table.row < 0 else f"row {table.row + 1}"
    if heading:
        lines.append(f"  {table.label}: {table.value}  ({decided})")
    else:
        lines.append(f"  decided by {decided}")
    for index, row in enumerate(table.rows):
        marker = "=>" if index == table.row else "  "
        state = "holds" if row.check.holds else "does not hold"
        if index > table.row >= 0:
            state += ", not reached"
        lines.append(f"    {marker} row {index + 1} {row.value}: {row.check.text}: {state}")
        lines += [f"          {line}" for line in _leaves(row.check)]
    if table.row < 0:
        lines.append(f"    => default {table.value}: no row holds")
    if table.note:
        lines.append(f"       note: {table.note}")
    return lines


def _leaves(check: Check, depth: int = 0) -> list[str]:
    mark = "yes" if check.holds else "no "
    if check.kind in ("compare", "missing"):
        return [f"{'  ' * depth}[{mark}] {check.text}: {check.detail}"]
    if check.kind == "dated":
        note = f" ({check.detail})" if check.detail else ""
        result = [f"{'  ' * depth}[{mark}] {check.text.split(':')[0]}{note}:"]
        for child in check.children:
            result += _leaves(child, depth + 1)
        return result
    result = []
    if depth or check.kind != "all":
        result.append(f"{'  ' * depth}[{'yes' if check.holds else 'no '}] {check.kind} of:")
        depth += 1
    for child in check.children:
        result += _leaves(child, depth)
    return result


def _program(program: ProgramExplanation) -> list[str]:
    mark = "[x]" if program.enrolled else "[ ]"
    group = f" [group {program.group}]" if program.group else ""
    lines = [f"  {mark} {program.name} ({program.id}){group}"]
    for reason in program.reasons:
        lines.append(f"        {reason}")
    if program.enrolled and program.benefits:
        benefits = ", ".join(f"{k.replace('_', ' ')}: {_plain(v)}" for k, v in program.benefits.items())
        lines.append(f"        benefits: {benefits}")
    return lines


def _plain(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
