"""The HTML run report: one self-contained file to look at a run.

Built from a run's folder (the current run of an output folder): summary.json,
decisions.jsonl, rejects.csv, changes.csv, letters/. The file has no external
resources: CSS and the partner table's script are inline, and the charts are
inline SVG. It is rendered by a sandboxed Jinja2 environment with
autoescaping and StrictUndefined. Roster values (partner ids, reasons) are
data, never markup.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from engine.data.outputs import AtomicFile
from engine.data.run_folders import SUMMARY, OutputFolder, current_run
from engine.letters.rendering import in_words, markdown_to_html

TEMPLATES = Path(__file__).parent / "templates"
REPORT_NAME = "report.html"
# A report stays a page a browser opens (about 2.5 KB a partner shown): at
# most this many partners, changes, and rejects; the output files hold them all.
MAX_REPORT_PARTNERS = 5000
MAX_REPORT_ROWS = 2000  # changes listed
MAX_LETTER_PREVIEWS = 2000  # letters shown in the report; the rest are in letters/
MAX_PREVIEW_CHARS = 12_000
BAR_WIDTH = 320


def _environment() -> SandboxedEnvironment:
    environment = SandboxedEnvironment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html"]),
    )
    environment.filters["words"] = in_words
    return environment


def _rows(path: Path) -> Iterator[dict]:
    """The rows of one of our CSV files, as a stream (none if it is missing)."""
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            yield from csv.DictReader(handle)


def _first_rows(path: Path, limit: int | None = None) -> tuple[list[dict], int]:
    """The first ``limit`` rows of a CSV file (MAX_REPORT_ROWS), and how many it has."""
    limit = MAX_REPORT_ROWS if limit is None else limit
    rows, count = [], 0
    for count, row in enumerate(_rows(path), 1):
        if count <= limit:
            rows.append(row)
    return rows, count


MAX_REJECT_GROUPS = 50  # kinds of reject the report lists (rejects.csv has every line)
REJECT_EXAMPLES = 3  # lines shown for each


def _reject_groups(path: Path) -> list[dict]:
    """rejects.csv grouped by file and column, largest group first, each with
    its count and its first REJECT_EXAMPLES lines: 2,000 rejects of one kind
    read as one line, not 2,000."""
    groups: dict[tuple[str, str], dict] = {}
    for row in _rows(path):
        key = (row["source_file"], row["column"])
        group = groups.setdefault(
            key, {"file": key[0], "column": key[1] or "(the row)", "count": 0, "examples": []}
        )
        group["count"] += 1
        if len(group["examples"]) < REJECT_EXAMPLES:
            group["examples"].append(row)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["file"], g["column"]))


def _bars(
    counts: dict[str, int], names: dict[str, str] | None = None, words: bool = False
) -> list[dict]:
    """Rows of a horizontal bar chart, scaled to the largest count, labelled
    with ``names`` (id -> what people read) where given, else (``words``)
    with the id in words."""
    top = max(counts.values(), default=0) or 1
    names = names or {}
    return [
        {
            "label": names.get(label, in_words(label) if words else label),
            "count": count,
            "width": round(BAR_WIDTH * count / top),
        }
        for label, count in counts.items()
    ]


def _title(label: str) -> str:
    return label[:1].upper() + label[1:]


# A reason as runs record it (engine.evaluate.requirements.brief), read back
# to be said in words: "certified_technical >= 10: has 8".
_REASON = re.compile(
    r"^(?P<name>[a-z][a-z0-9_]*)(?: (?P<op>>=|<=|>|<|==|!=|not in|in|contains|between) "
    r"(?P<want>.+?))?: has (?P<has>.*)$"
)
_RANKS = re.compile(r"^(?P<winner>[a-z][a-z0-9_]*) ranks higher in group (?P<group>.+)$")
_WANTS = {
    ">=": "at least {} needed",
    ">": "more than {} needed",
    "<=": "at most {} allowed",
    "<": "below {} needed",
    "==": "{} needed",
    "!=": "must not be {}",
    "in": "one of {} needed",
    "not in": "must not be one of {}",
    "contains": "{} needed",
    "between": "{} needed",
}


def reason_sentence(reason: str, names: dict[str, str], labels: dict[str, str]) -> str:
    """A missed program's reason, as decisions.jsonl records it, in the words
    of the report: labels for names, program names for ids. A reason of
    another shape is kept as it is."""
    if reason.startswith("none of: "):
        parts = reason[len("none of: ") :].split("; ")
        return "none of these holds: " + "; ".join(
            reason_sentence(part, names, labels) for part in parts
        )
    if reason.startswith(("from ", "until ")) and ": " in reason:  # a dated requirement
        when, rest = reason.split(": ", 1)
        return f"{when}: {reason_sentence(rest, names, labels)}"
    if reason.startswith("requires "):
        required = reason[len("requires ") :]
        return f"requires {names.get(required, in_words(required))}"
    ranks = _RANKS.match(reason)
    if ranks:
        winner = names.get(ranks["winner"], in_words(ranks["winner"]))
        return f"{winner} ranks higher in the {in_words(ranks['group'])} group"
    found = _REASON.match(reason)
    if not found:
        return reason
    label = labels.get(found["name"], in_words(found["name"]))
    has = in_words(found["has"].strip("[]"))
    if found["op"] is None:
        return f"{label}: needed, has {has}"
    want = in_words(found["want"].strip("[]"))
    return f"{label}: {_WANTS[found['op']].format(want)}, has {has}"


def change_sentence(change: dict, names: dict[str, str], labels: dict[str, str]) -> str:
    """A line of changes.csv in words: "Tier: Select Partner to Registered
    Partner (down)", "Joined Deal registration"."""
    kind, subject = change["change"], change["subject"]
    before, after = change["before"], change["after"]

    def named(value: str) -> str:
        return names.get(value, in_words(value)) if value else "none"

    if kind == "new_partner":
        return "New partner"
    if kind == "removed_partner":
        return "No longer in the roster"
    if kind == "returned_partner":
        return f"Back in the roster (last decided by run {before})"
    if kind in ("classification", "engagement_model", "group_change"):
        what = (
            labels.get(subject, in_words(subject))
            if kind == "classification"
            else "Engagement model"
            if kind == "engagement_model"
            else in_words(subject)
        )
        moved = change["direction"] if change["direction"] in ("up", "down") else "changed"
        word = named if kind != "classification" else lambda v: in_words(v) if v else "none"
        return f"{_title(what)}: {word(before)} to {word(after)}" + (
            f" ({moved})" if moved != "changed" else ""
        )
    if kind == "enrolled":
        return f"Joined {named(subject)}"
    if kind == "dropped":
        return f"Left {named(subject)}"
    if kind == "kept":
        return f"Kept in {named(subject)} by its {before} until {after}, not qualifying now"
    return f"{in_words(kind)} {subject}: {before} to {after}"  # pragma: no cover


MAX_TREND_RUNS = 12  # the newest runs a trend shows
TREND_LEFT, TREND_WIDTH, TREND_HEIGHT = 40, 520, 150  # the SVG is 600 x 190
TREND_COLOURS = ("#486581", "#d64545", "#f0b429", "#3ebd93", "#9446ed", "#2186eb", "#829ab1")


def _trends(folder: Path, summary: dict) -> dict:
    """Partners per member of each exclusive group (the tiers) and per value
    of each ranked classification (standing, size), run by run: from the summaries
    of the recorded runs of the same rule set beside this one (--out/runs/),
    the newest MAX_TREND_RUNS, oldest first. Each trend: its runs (id, as-of
    date), and per value its label, colour, counts and SVG points."""
    name = summary["rule_set"]["name"]
    found = {}
    for sibling in folder.parent.iterdir() if folder.parent.is_dir() else ():
        try:
            other = json.loads((sibling / SUMMARY).read_text(encoding="utf-8"))
            if other["rule_set"]["name"] == name:
                found[int(other["run"]["id"])] = other
        except (OSError, ValueError, KeyError, TypeError):
            continue
    found[int(summary["run"]["id"])] = summary
    runs = [found[i] for i in sorted(found)[-MAX_TREND_RUNS:]]
    names = summary.get("names", {})
    series: dict[str, list[tuple[str, str, list[int]]]] = {}
    for group, members in summary.get("groups", {}).items():
        series[_title(in_words(group))] = [
            (m, names.get(m, m), [r["programs"].get(m, 0) for r in runs]) for m in members
        ]
    for table in summary.get("ranked", []):  # classifications whose values rank
        label = summary.get("labels", {}).get(table, table)
        series[_title(label)] = [
            (v, in_words(v), [r["classifications"].get(table, {}).get(v, 0) for r in runs])
            for v in summary["classifications"][table]
        ]
    trends = {}
    for title, lines in series.items():
        top = max((n for _, _, counts in lines for n in counts), default=0) or 1
        step = TREND_WIDTH / max(len(runs) - 1, 1)
        trends[title] = {
            "top": top,
            "runs": [
                {"id": r["run"]["id"], "as_of": r["as_of"], "x": round(TREND_LEFT + j * step)}
                for j, r in enumerate(runs)
            ],
            "lines": [
                {
                    "label": label,
                    "colour": TREND_COLOURS[i % len(TREND_COLOURS)],
                    "counts": counts,
                    "points": " ".join(
                        f"{round(TREND_LEFT + j * step)},{round(10 + TREND_HEIGHT * (1 - n / top))}"
                        for j, n in enumerate(counts)
                    ),
                }
                for i, (_, label, counts) in enumerate(lines)
            ],
        }
    return trends


def build_report(
    folder: str | Path, output: str | Path | None = None, moves: str | Path | None = None
) -> Path:
    """Write the report for the run in ``folder``; returns the file written.

    ``moves`` is a CSV written by ``eligibility diff --csv``; its moves become
    the report's what-if section.
    """
    folder = current_run(Path(folder))
    summary_path = folder / SUMMARY
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    names = summary.get("names", {})  # runs recorded before names were: their ids
    changes, change_count = _first_rows(folder / "changes.csv")
    reject_groups = _reject_groups(folder / "rejects.csv")
    moves_shown, move_count = _first_rows(Path(moves)) if moves else (None, 0)
    partners = _partners_shown(folder, {row["partner_id"] for row in _rows(folder / "changes.csv")})
    previews = _letter_previews(folder, {p["partner_id"] for p in partners})
    labels = summary.get("labels", {})  # runs recorded before labels were: their ids
    for partner in partners:
        partner["letter"] = previews.get(partner["partner_id"])
        partner["missed_said"] = {
            program: [reason_sentence(r, names, labels) for r in reasons]
            for program, reasons in partner["not_enrolled"].items()
        }
    context = {
        "summary": summary,
        "names": names,
        "labels": labels,
        "partners": partners,
        # Embedded as JSON for the detail panel; Jinja's tojson escapes <, >, &.
        "partners_json": partners,
        "charts": {
            **{
                _title(labels.get(name, name)): _bars(counts, words=True)
                for name, counts in summary["classifications"].items()
            },
            **(
                {"Engagement models": _bars(summary["engagement_models"], names)}
                if summary["engagement_models"]
                else {}
            ),
            "Programs": _bars(summary["programs"], names),
        },
        "reject_groups": reject_groups,
        "max_reject_groups": MAX_REJECT_GROUPS,
        "reject_examples": REJECT_EXAMPLES,
        "changes": [{**c, "said": change_sentence(c, names, labels)} for c in changes],
        "trends": _trends(folder, summary),
        "counts": {
            "rejects": sum(g["count"] for g in reject_groups),
            "changes": change_count,
            "moves": move_count,
        },
        "moves": moves_shown,
        "letters": {
            "written": _first_rows(folder / "letters" / "index.csv", 0)[1],
            "previewed": len(previews),
        },
    }
    html = _environment().get_template("report.html").render(**context)
    target = Path(output) if output else folder / REPORT_NAME
    _write(target, html)
    outputs = OutputFolder.of_run(folder)
    if output is None and outputs.current() == folder.resolve():
        outputs.link_outputs()  # DIR/report.html
    return target


def _partners_shown(folder: Path, changed: set[str]) -> list[dict]:
    """At most MAX_REPORT_PARTNERS decisions, in roster order: the partners
    with changes since the previous run first, then the others from the top.
    decisions.jsonl is read as a stream, never whole."""
    first: list[dict] = []
    others: list[dict] = []
    with (folder / "decisions.jsonl").open("rb") as handle:
        for line in handle:
            if len(first) >= MAX_REPORT_PARTNERS:
                break
            partner = orjson.loads(line)
            if partner["partner_id"] in changed:
                first.append(partner)
            elif len(others) < MAX_REPORT_PARTNERS:
                others.append(partner)
    shown = first + others[: MAX_REPORT_PARTNERS - len(first)]
    return sorted(shown, key=lambda partner: partner["row"])


def _letter_previews(folder: Path, partner_ids: set[str]) -> dict[str, dict]:
    """The text of the letters of partners shown (letters/index.csv), for the
    detail panel: at most MAX_LETTER_PREVIEWS."""
    previews: dict[str, dict] = {}
    for row in _rows(folder / "letters" / "index.csv"):
        if len(previews) >= MAX_LETTER_PREVIEWS:
            break
        if row["partner_id"] not in partner_ids:
            continue
        text_file = next((name for name in row["files"].split(";") if name.endswith(".txt")), None)
        text = ""
        if text_file and (folder / "letters" / text_file).is_file():
            text = (folder / "letters" / text_file).read_text(encoding="utf-8")
            if len(text) > MAX_PREVIEW_CHARS:
                text = text[:MAX_PREVIEW_CHARS] + "\n…"
        previews[row["partner_id"]] = {
            "subject": row["subject"],
            "kind": row["kind"],
            "language": row["template_language"],
            "files": row["files"],
            "text": text,
            # As the partner reads it: the Markdown rendered as the HTML
            # letters are (raw HTML left out), shown in a sandboxed frame.
            "html": markdown_to_html(text) if text else "",
        }
    return previews


def build_diff_report(impact, output: str | Path) -> Path:
    """A self-contained HTML page of a what-if comparison (see engine.run.impact)."""
    from engine.run.impact import impact_rows

    rows = [row for row in impact_rows(impact) if row[5] or row[6]]
    context = {
        "impact": impact,
        "rows": [
            {
                "label": f"{kind} {subject}"
                if kind == "program"
                else f"{kind} {subject} = {value}",
                "base": before,
                "proposed": after,
                "entered": entered,
                "left": left,
            }
            for kind, subject, value, before, after, entered, left in rows
        ],
        "moves": impact.moves[:MAX_REPORT_PARTNERS],
        "move_count": len(impact.moves),
    }
    target = Path(output)
    _write(target, _environment().get_template("diff.html").render(**context))
    return target


def _write(target: Path, html: str) -> None:
    with AtomicFile(target) as result:
        result.handle.write(html)
