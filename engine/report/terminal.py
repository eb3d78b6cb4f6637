"""Plain-text rendering for a terminal: explanations, what-if impacts, runs."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

from engine.evaluate.decide import Decision
from engine.evaluate.explain import Check, Explanation, ProgramExplanation, TableExplanation
from engine.ruleset.model import RuleSet
from engine.ruleset.value_types import plain_text
from engine.run.driver import still_held


def explanation_text(
    ruleset: RuleSet, decision: Decision, explanation: Explanation, partner_name: str | None = None
) -> str:
    lines: list[str] = []
    title = f"Partner {decision.partner_id}" + (f" ({partner_name})" if partner_name else "")
    figures = f", figures through {explanation.through}" if ruleset.figures else ""
    lines += [
        f"{title}, as of {explanation.as_of}{figures}",
        f"Rule set: {ruleset.name} (fingerprint {ruleset.fingerprint})",
        "",
    ]
    lines.append("Classifications")
    for table in explanation.classifications:
        lines += _table(table)
    if ruleset.engagement_declared:
        model = ruleset.engagement_models[decision.engagement]
        lines += ["", f"Engagement model: {model.name} ({model.id})"]
        lines += _table(explanation.engagement, heading=False)
        for key, value in model.resources.items():
            lines.append(f"    {key.replace('_', ' ')}: {plain_text(value)}")
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
        benefits = ", ".join(
            f"{k.replace('_', ' ')}: {plain_text(v)}" for k, v in program.benefits.items()
        )
        lines.append(f"        benefits: {benefits}")
    return lines


def impact_text(
    impact,
    base_fingerprint: str,
    proposed_fingerprint: str,
    show_all: bool = False,
    limit: int = 30,
) -> str:
    """A what-if comparison (engine.run.impact.Impact): counts, then moved partners."""
    from engine.run.impact import impact_rows

    lines = [
        f"Base:     {impact.base_label} (fingerprint {base_fingerprint})",
        f"Proposed: {impact.proposed_label} (fingerprint {proposed_fingerprint})",
        f"{impact.partners} partners decided on both sides"
        + (f"; {impact.rejected_rows} roster rows rejected" if impact.rejected_rows else "")
        + ".",
        "",
    ]
    rows = [row for row in impact_rows(impact) if show_all or row[5] or row[6]]
    labels = [
        f"{kind} {subject}" if kind == "program" else f"{kind} {subject} = {value}"
        for kind, subject, value, *_ in rows
    ]
    if rows:
        width = max(len(label) for label in labels)
        lines.append(f"{'':{width}}  {'base':>8} {'proposed':>8} {'entered':>8} {'left':>8}")
        for label, (*_, before, after, entered, left) in zip(labels, rows):
            lines.append(f"{label:{width}}  {before:>8} {after:>8} {entered:>8} {left:>8}")
    if not impact.moves:
        lines += ["", "No partner moves."]
        return "\n".join(lines)
    shown = impact.moves[:limit]
    lines += ["", f"Partners that move ({len(shown)} of {len(impact.moves)}):"]
    for move in shown:
        change = f"{move.base or '(none)'} -> {move.proposed or '(none)'}"
        reason = f": {'; '.join(move.because)}" if move.because else ""
        lines.append(f"  {move.partner_id}  {move.kind} {move.subject}: {change}{reason}")
    return "\n".join(lines)


def run_list_text(records) -> str:
    """One line per recorded run (engine.data.run_history.RunRecord)."""
    if not records:
        return "No runs recorded yet."
    rows = [
        ("run", "finished (UTC)", "as of", "rules", "roster", "read", "decided", "rejected", "")
    ]
    rows += [
        (
            str(r.id),
            r.finished_at.replace("T", " ")[:16],
            r.as_of,
            f"{r.ruleset_name} ({r.rules_fingerprint[:8]})",
            Path(r.roster_source).name,
            f"{r.rows_read:,}",
            f"{r.decided:,}",
            f"{r.rejected:,}",
            "HELD" if still_held(r.summary) else "",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {0, 5, 6, 7}
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ).rstrip()
        for row in rows
    )


def run_text(r, sends: dict[str, int] | None = None) -> str:
    """One recorded run in detail: inputs, fingerprints, counts, changes, and
    how its letters were sent (``sends``: outcome -> letters)."""
    s = r.summary
    lines = [
        f"Run {r.id}, as of {r.as_of}, started {r.started_at}, finished {r.finished_at}",
        f"  rules:       {r.ruleset_name} (fingerprint {r.rules_fingerprint})",
        f"  roster:      {r.roster_source} (fingerprint {r.roster_fingerprint})",
    ]
    if r.performance_source:
        lines.append(
            f"  performance: {r.performance_source} (fingerprint {r.performance_fingerprint})"
        )
    folder = Path(r.output_folder)
    if (folder / "summary.json").is_file():  # letters written since the run are in it
        s = {
            **s,
            "letters": json.loads((folder / "summary.json").read_text("utf-8")).get("letters"),
        }
    letters = s.get("letters")
    lines += [
        f"  output:      {folder}" + ("" if folder.is_dir() else " (deleted since)"),
        f"  partners:    {r.rows_read} read, {r.decided} decided, {r.rejected} rejected",
        f"  letters:     {letters['letters']} written ({', '.join(letters['formats'])})"
        if letters
        else f"  letters:     none written ('eligibility letters --run {r.id}' writes them)",
    ]
    if sends:
        lines.append(
            "  sent:        "
            + ", ".join(f"{n:,} {outcome}" for outcome, n in sends.items())
            + " (to partners; 'eligibility send' sends the rest)"
        )
    held = s.get("held")
    if held:
        lines.append(
            f"  held:        {held['reason']}; released {held['released_at']}"
            if held.get("released_at")
            else f"  held:        {held['reason']}; 'eligibility release {r.id}' lets its "
            "letters out"
        )
    changes = s["changes"]
    if changes["previous_run"] is not None:
        listed = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in changes["counts"].items() if n)
        lines.append(f"  changes since run {changes['previous_run']}: {listed or 'none'}")
    for table, counts in s["classifications"].items():
        lines.append(f"  {table}: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    names = s.get("names", {})  # runs recorded before names were: their ids
    if s["engagement_models"]:
        lines.append(
            "  engagement models: "
            + ", ".join(f"{names.get(m, m)} {n}" for m, n in s["engagement_models"].items())
        )
    lines.append(
        "  programs: " + ", ".join(f"{names.get(p, p)} {n}" for p, n in s["programs"].items())
    )
    kept = kept_text(s)
    if kept:
        lines.append(f"  kept by memory: {kept}")
    return "\n".join(lines)


def kept_text(summary: dict) -> str:
    """The partners memory kept in programs they do not qualify for now, by
    program and how: 'Premier Partner 1 (grace)'; empty when none."""
    names = summary.get("names", {})
    return ", ".join(
        f"{names.get(program, program)} {n:,} ({how})"
        for program, ways in summary.get("kept", {}).items()
        for how, n in ways.items()
    )


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``1 letter``, ``2 letters``, ``1,000 rows``: a count and its noun."""
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"


def letters_text(summary: dict) -> str:
    """What a letters run wrote (the ``letters`` section of summary.json)."""
    kinds = ", ".join(
        f"{n:,} {kind.replace('_', ' ')}" for kind, n in summary["by_kind"].items() if n
    )
    lines = [
        f"Wrote {counted(summary['letters'], 'letter')} ({counted(summary['files'], 'file')}: "
        f"{', '.join(summary['formats'])}) to {summary['folder']}/, listed in "
        f"{summary['folder']}/index.csv" + (f"; {kinds}" if kinds else "") + "."
    ]
    if summary["only_changed"]:
        lines.append(
            f"Left out {counted(summary['skipped_unchanged'], 'partner')} without changes "
            "(--only-changed)."
        )
    if summary["fallbacks"]:
        lines.append(
            "Written in the default language for lack of a template or of words for the "
            "rules (see validate): "
            + ", ".join(f"{n:,} in '{lang}'" for lang, n in summary["fallbacks"].items())
            + "."
        )
    if summary["without_address"]:
        count = summary["without_address"]
        lines.append(
            f"{count:,} partner{' has' if count == 1 else 's have'} no usable "
            "contact_email: no To in the .eml (see the index's note column)."
        )
    return "\n".join(lines)


MAX_LISTED = 10  # problem letters a send lists one by one


def send_text(report, server: str = "") -> str:
    """What ``eligibility send`` did, or (a dry run) would do: see
    :class:`engine.run.sending.SendReport`."""
    where = f"the test mailbox {report.to_test}" if report.to_test else "partners"
    skipped = ", ".join(
        f"{n:,} {reason}" for reason, n in sorted(report.skipped.items(), key=lambda i: -i[1])
    )
    lines = []
    if report.dry_run:
        lines.append(
            f"Dry run (nothing sent; add --confirm and --smtp HOST:PORT to send): run "
            f"{report.run_id} has {counted(report.total, 'letter')}; "
            f"{counted(report.to_send, 'letter')} would go to {where}"
            + (f"; not sent: {skipped}" if skipped else "")
            + "."
        )
        if report.sample:
            lines.append("First recipients:")
            lines += [f"  {partner}  {address}" for partner, address in report.sample]
    else:
        sent = report.outcomes.get("sent", 0)
        rate = f", {sent / report.seconds:,.0f}/s" if report.seconds and sent else ""
        if not report.to_send:
            lines.append(
                f"Nothing to send for run {report.run_id} to {where}"
                + (f": {skipped}" if skipped else "")
                + "."
            )
        else:
            lines.append(
                f"Sent {counted(sent, 'letter')} of run {report.run_id} to {where}"
                + (f" through {server}" if server else "")
                + f" in {report.seconds:,.1f} s{rate}, over "
                f"{counted(report.connections, 'connection')}"
                + (f"; not sent: {skipped}" if skipped else "")
                + "."
            )
        failed = {k: n for k, n in report.outcomes.items() if k != "sent"}
        if failed:
            lines.append(
                "Not delivered: "
                + ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(failed.items()))
                + " (recorded in the run history; a next send tries the deferred again)."
            )
    if report.problems:
        lines.append("To look at:")
        for partner, address, what, detail in report.problems[:MAX_LISTED]:
            lines.append(f"  {partner}  {address or '(no address)'}  {what}: {detail}")
        if len(report.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED:,} more")
    return "\n".join(lines)


def message_text(raw: bytes) -> str:
    """An email as a person reads it: From, To, Subject, and its plain text."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(preferencelist=("plain",))
    lines = [f"{name}: {message.get(name, '(none)')}" for name in ("From", "To", "Subject")]
    return "\n".join([*lines, "", body.get_content().rstrip() if body else ""])
