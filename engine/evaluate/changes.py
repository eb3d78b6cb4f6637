"""What changed for a partner between two runs: the input for letters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.ruleset.model import ENGAGEMENT, RuleSet

COLUMNS = ("partner_id", "change", "subject", "before", "after", "direction")
# Changes that move a partner: its tier (an exclusive group), a classification,
# or its engagement model. Too many at once hold a run (engine.run.driver).
MOVES = frozenset({"classification", "engagement_model", "group_change"})
KINDS = (
    "new_partner",
    "removed_partner",
    "returned_partner",
    "classification",
    "engagement_model",
    "group_change",
    "enrolled",
    "dropped",
    "kept",  # memory now keeps the partner in a program: before how, after until when
)


@dataclass(frozen=True)
class Snapshot:
    """A partner's decisions as stored in the run history."""

    classifications: Mapping[str, str]
    engagement: str
    programs: tuple[str, ...]
    # The programs memory kept the partner in (enrolled, but not by their
    # conditions): program -> (how: grace, protection, renewal; until: ISO date).
    kept: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    partner_id: str
    change: str  # one of KINDS
    subject: str  # table, 'engagement', exclusive group, or program id
    before: str
    after: str
    direction: str  # up, down, changed, or empty

    def as_row(self) -> tuple:
        return (self.partner_id, self.change, self.subject, self.before, self.after, self.direction)


def compare(
    ruleset: RuleSet, partner_id: str, before: Snapshot | None, after: Snapshot
) -> list[Change]:
    """Changes from ``before`` (None: the partner is new) to ``after``."""
    if before is None:
        return [Change(partner_id, "new_partner", "", "", "", "")]
    changes = []
    for table in ruleset.classifications:
        old, new = before.classifications.get(table.name), after.classifications[table.name]
        if old != new:
            direction = table.direction(old, new) if old is not None else "changed"
            changes.append(
                Change(partner_id, "classification", table.name, old or "", new, direction)
            )
    if before.engagement != after.engagement:
        changes.append(
            Change(
                partner_id,
                "engagement_model",
                ENGAGEMENT,
                before.engagement,
                after.engagement,
                ruleset.engagement.direction(before.engagement, after.engagement),
            )
        )
    old_programs, new_programs = set(before.programs), set(after.programs)
    groups = dict.fromkeys(p.group for p in ruleset.programs if p.group)
    for group in groups:
        members = ruleset.group_members(group)  # highest priority first
        old = next((m for m in members if m.id in old_programs), None)
        new = next((m for m in members if m.id in new_programs), None)
        if old != new:
            direction = (
                "changed"
                if old is None or new is None
                else "up"
                if new.priority > old.priority
                else "down"
            )
            changes.append(
                Change(
                    partner_id,
                    "group_change",
                    group,
                    old.id if old else "",
                    new.id if new else "",
                    direction,
                )
            )
    for program in ruleset.programs:
        if program.id in new_programs - old_programs:
            changes.append(Change(partner_id, "enrolled", program.id, "", program.id, ""))
        elif program.id in old_programs - new_programs:
            changes.append(Change(partner_id, "dropped", program.id, program.id, "", ""))
        if program.id in after.kept and program.id not in before.kept:
            how, until = after.kept[program.id]
            changes.append(Change(partner_id, "kept", program.id, how, until, ""))
    return changes
