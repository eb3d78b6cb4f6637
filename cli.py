"""The ``eligibility`` command: a thin click layer over :mod:`engine`.

Exit codes: 0 ok, 1 bad rules, data or inputs (or an engine failure, or another run
busy with the same folder or history), 2 usage.
Errors go to stderr, without tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from engine.data.memory import EarlierEnrollments, MemorySource
from engine.data.project import load_project
from engine.data.readers import find_partner, partner_from_json_file
from engine.data.run_history import DEFAULT_DB, RunHistory
from engine.errors import DataError, EligibilityError, EngineError, UsageError
from engine.evaluate.decide import Evaluator
from engine.evaluate.explain import explain
from engine.letters.settings import settings_schema
from engine.letters.smtp import ServerOptions, parse_server
from engine.letters.template_check import check_templates
from engine.report.html import build_diff_report, build_report
from engine.report.terminal import (
    counted,
    explanation_text,
    impact_text,
    kept_text,
    letters_text,
    message_text,
    run_list_text,
    run_text,
    send_text,
)
from engine.ruleset.loader import load_rules
from engine.ruleset.model import RuleSet
from engine.ruleset.quarters import Quarter, parse_quarter
from engine.ruleset.schema import partner_file_schema, rule_file_schema
from engine.ruleset.semantics import unused_declarations
from engine.run.driver import (
    OUTPUT_FILES,
    Progress,
    RunLetters,
    RunOptions,
    default_workers,
    prune_runs,
    release_run,
    run_batch,
)
from engine.run.impact import compare, load_rule_sets, write_moves_csv
from engine.run.letters_pass import FORMATS as LETTER_FORMATS, LetterOptions, write_letters
from engine.run.sending import SendOptions, send_letters
from engine.testing.rule_cases import case_file_schema, failure_report, load_cases, run_case

DEFAULT_RULES = "rules"
DEFAULT_ROSTER = "examples/roster.csv"
DEFAULT_PERFORMANCE = "examples/performance.csv"
DEFAULT_OUT = "out"
DEFAULT_TEMPLATES = "templates"
DB_ENV = "ELIGIBILITY_DB"
SMTP_USER_ENV = "ELIGIBILITY_SMTP_USER"
SMTP_PASSWORD_ENV = "ELIGIBILITY_SMTP_PASSWORD"


def _as_of(_ctx, _param, value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date; use YYYY-MM-DD") from None


def _quarter(_ctx, _param, value: str | None) -> Quarter | None:
    if value is None:
        return None
    try:
        return parse_quarter(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


THROUGH_OPTION = click.option(
    "--through",
    callback=_quarter,
    metavar="QUARTER",
    help="Read quarterly figures up to this quarter (like 2026Q3), when the last one "
    "complete on --as-of is not in yet. Dates (tenure, dated rules) still count "
    "from --as-of. Default: the last quarter complete on --as-of.",
)

WORKERS_OPTION = click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker processes. Default: the machine's cores.",
)

OUT_DIR_ARGUMENT = click.argument(
    "out_dir",
    default=DEFAULT_OUT,
    metavar="[DIR]",
    type=click.Path(file_okay=False, path_type=Path),
)
# The rules folder: --rules DIR in every command; validate and test also take
# it as their argument (eligibility validate rules/), the same thing.
RULES_OPTION = click.option(
    "--rules", "rules_dir", default=DEFAULT_RULES, show_default=True, help="Rules folder."
)
RULES_ARGUMENT = click.argument("rules_arg", required=False, metavar="[RULES_DIR]")

DB_OPTION = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Run-history database. Default: ${DB_ENV}, else ./{DEFAULT_DB}.",
)

CLUSTER_OPTION = click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Decide on a Dask cluster: a scheduler's address (tcp://HOST:8786, tls://...), "
    "or local:N to start N worker processes here. Needs the cluster extra "
    "(pip install 'partner-eligibility[cluster]'); docs/cluster.md.",
)

ENROLLMENTS_OPTION = click.option(
    "--enrollments",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Earlier enrollments (CSV: partner_id, program, from, to) for rules with "
    "memory (grace, protection, renewal, held(...)), beside the run history.",
)

ONLY_CHANGED_OPTION = click.option(
    "--only-changed",
    is_flag=True,
    help="Only partners whose decisions changed since the previous run.",
)


class _Group(click.Group):
    """Turns the library's errors into a message on stderr and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EligibilityError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted: nothing half-written was kept (what was being written "
                "is gone, what was complete stays)",
                err=True,
            )
            ctx.exit(130)
        except BrokenPipeError:  # `eligibility history | head`: the reader had enough;
            raise  # click leaves quietly (exit 1), where this would say "error: Broken pipe"
        except OSError as error:  # a folder that is a file, no permission, a full disk
            where = f"{error.filename}: " if error.filename else ""
            click.echo(f"error: {where}{error.strerror or error}", err=True)
            ctx.exit(1)


# Each key of the project config (engine.data.project) is the default of
# the option of this name, in every command that has it.
CONFIG_PARAMETERS = {
    "rules": "rules_dir",
    "templates": "templates_dir",
    "roster": "roster",
    "performance": "performance",
    "enrollments": "enrollments",
    "db": "db",
    "out": "out_dir",
    "max_rejects": "max_rejects",
    "max_moves": "max_moves",
    "workers": "workers",
    "smtp": "server",
    "starttls": "starttls",
    "ssl": "use_ssl",
    "per_minute": "per_minute",
}


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="partner-eligibility")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Decide which partner type, engagement model, and programs each channel
    partner gets, from YAML rules a channel manager can read, and explain why.

    \b
    Examples:
      eligibility run --as-of 2026-11-26
      eligibility validate rules/
      eligibility test rules/
      eligibility diff --base git:HEAD:rules --proposed rules
      eligibility report out/
      eligibility explain P-1001 --as-of 2026-11-26
      eligibility letters out/ --only-changed
      eligibility send out/ --smtp mail.example.com --starttls --confirm
      eligibility history
      eligibility release 7
      eligibility schema rules
    """
    project = load_project()
    defaults: dict[str, dict] = {}
    for name, command in cli.commands.items():
        names = {p.name for p in command.params}
        defaults[name] = {
            CONFIG_PARAMETERS[key]: value
            for key, value in project.values.items()
            if CONFIG_PARAMETERS[key] in names
        }
    ctx.default_map = defaults


@cli.command()
@RULES_ARGUMENT
@RULES_OPTION
@click.option(
    "--templates",
    "templates_dir",
    default=DEFAULT_TEMPLATES,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Letter templates to check too (without this option, skipped when "
    "templates/ does not exist).",
)
@click.option(
    "--roster",
    default=DEFAULT_ROSTER,
    show_default=True,
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help="Partners to render every template against.",
)
@click.option(
    "--performance",
    default=DEFAULT_PERFORMANCE,
    show_default=True,
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help="Their quarterly performance history.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 1) on what is otherwise a warning: a language that lacks words "
    "for the rules in its terms.yaml (its letters are then written in the default "
    "language), a metric or parameter nothing reads.",
)
def validate(
    rules_arg: str | None,
    rules_dir: str,
    templates_dir: Path,
    roster: Path,
    performance: Path,
    strict: bool,
) -> None:
    """Check a rule set and its letter templates; report every problem.

    Rule problems are reported as file:line:column: message. Then every letter
    template, in every language, is rendered against the roster's partners
    (and every kind of change), so that a syntax error, an undefined name,
    raw HTML (which HTML letters would leave out), or text and blocks that
    Jinja2 would drop from a template extending the layout are reported as
    template:line: message before a run, not in the middle of one. Every
    rule id a letter may show (program names, classification values, fields
    the rules test, ...) is looked up in each language's terms.yaml: a
    language that lacks some gets a warning listing them, since its letters
    are then written in the default language (an error with --strict).
    Exits 0 when all is valid and 1 when there is any problem. RULES_DIR
    (or --rules, the same) defaults to rules/.

    \b
    Examples:
      eligibility validate rules/
      eligibility validate rules/ --templates my-templates/
      eligibility validate --rules rules/
    """
    rules_dir = _rules_folder(rules_arg, rules_dir)
    ruleset = load_rules(rules_dir)
    Evaluator(ruleset)  # compiling into durable_rules can fail too; find out now
    parts = [
        counted(len(ruleset.fields), "field"),
        counted(len(ruleset.metrics), "metric"),
        counted(len(ruleset.classifications), "classification"),
        *([counted(len(ruleset.engagement_models), "engagement model")]
          if ruleset.engagement_declared else []),
        counted(len(ruleset.programs), "program"),
    ]  # fmt: skip
    click.echo(
        f"{rules_dir}: valid. {ruleset.name}: {', '.join(parts)} "
        f"(fingerprint {ruleset.fingerprint})."
    )
    unused = unused_declarations(ruleset)
    for problem in unused:
        click.echo(f"{'error' if strict else 'warning'}: {problem}", err=True)
    if strict and unused:
        raise click.exceptions.Exit(1)
    given = (
        click.get_current_context().get_parameter_source("templates_dir")
        != click.core.ParameterSource.DEFAULT
    )
    if given or templates_dir.is_dir():
        checked = check_templates(
            ruleset, templates_dir, roster, performance if performance.is_file() else None
        )
        for language, ids in checked.untranslated.items():
            click.echo(
                f"{'error' if strict else 'warning'}: {templates_dir / language / 'terms.yaml'}: "
                f"no word for {counted(len(ids), 'rule id')} ({', '.join(ids)}); letters in "
                f"'{language}' are written in '{checked.default_language}' until they are added",
                err=True,
            )
        if strict and checked.untranslated:
            raise click.exceptions.Exit(1)
        click.echo(
            f"{templates_dir}: valid. {counted(checked.templates, 'template')} in "
            f"{counted(len(checked.languages), 'language')} ({', '.join(checked.languages)}), "
            f"each rendered against {counted(checked.partners, 'partner')}."
        )


@cli.command(name="test")
@RULES_ARGUMENT
@RULES_OPTION
def test_command(rules_arg: str | None, rules_dir: str) -> None:
    """Run the rule tests kept in RULES_DIR/tests/*.yaml (RULES_DIR or --rules).

    Each case gives a partner, its history, and an as-of date, and what the
    rules must decide. A failing case prints its file, line, and name, what was
    expected against what was decided, and the partner's full explanation.
    Exits 1 if any case fails.

    \b
    Example:
      eligibility test rules/
      eligibility test --rules rules/
    """
    rules_dir = _rules_folder(rules_arg, rules_dir)
    ruleset = load_rules(rules_dir)
    cases = load_cases(ruleset)
    if not cases:
        raise UsageError(
            f"no rule tests in {Path(rules_dir) / 'tests'}; see "
            "docs/rule-authoring.md, 'Rule tests'"
        )
    evaluator = Evaluator(ruleset)
    failed = 0
    for case in cases:
        result = run_case(ruleset, evaluator, case)
        if result.passed:
            click.echo(f"ok    {case.name}")
        else:
            failed += 1
            click.echo(f"FAIL  {failure_report(ruleset, result)}\n")
    click.echo(f"{len(cases) - failed} passed, {failed} failed")
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option(
    "--base",
    default="git:HEAD:rules",
    show_default=True,
    help="Rule set now: a folder, or git:REVISION:PATH.",
)
@click.option(
    "--proposed",
    default=DEFAULT_RULES,
    show_default=True,
    help="Rule set proposed: a folder, or git:REVISION:PATH.",
)
@click.option(
    "--roster",
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help=f"Roster. Default: {DEFAULT_ROSTER} with {DEFAULT_PERFORMANCE}.",
)
@click.option(
    "--performance",
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help="Quarterly performance history.",
)
@click.option(
    "--as-of",
    callback=_as_of,
    metavar="DATE",
    help="Decide as of this date (YYYY-MM-DD). Default: today.",
)
@click.option(
    "--proposed-as-of",
    metavar="DATE",
    default=None,
    help="Decide the proposed side as of another date, to see who an "
    "announced change will move. Default: --as-of.",
)
@THROUGH_OPTION
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every move, with its reason, to this CSV file.",
)
@click.option(
    "--limit",
    type=click.IntRange(0),
    default=30,
    show_default=True,
    help="Moves listed on screen (the CSV has them all).",
)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="List every program and value, not only those that change.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a self-contained HTML page of the comparison.",
)
@WORKERS_OPTION
@CLUSTER_OPTION
@DB_OPTION
@ENROLLMENTS_OPTION
def diff(
    base: str,
    proposed: str,
    roster: Path | None,
    performance: Path | None,
    as_of: dt.date,
    proposed_as_of: str | None,
    through: Quarter | None,
    csv_path: Path | None,
    limit: int,
    show_all: bool,
    html_path: Path | None,
    workers: int | None,
    cluster: str | None,
    db: Path | None,
    enrollments: Path | None,
) -> None:
    """Show who a rule change would move, and why, before it lands.

    Decides the roster with both rule sets and counts, for every program,
    classification value, and engagement model, who enters and who leaves;
    then lists each partner that moves with the condition that made the
    difference. By default it compares the committed rules (git:HEAD:rules)
    with the rules folder as edited. Rules with memory (grace, protection,
    renewal) read what partners held in earlier runs of the base rule set in
    --db, and --enrollments; both sides read the same.

    \b
    Examples:
      eligibility diff
      eligibility diff --base rules-2026 --proposed rules-2027 --csv moves.csv --html moves.html
      eligibility diff --base rules --as-of 2026-12-31 --proposed-as-of 2027-01-01
    """
    performance = _paired_performance(roster, performance)
    if roster is None:
        roster = Path(DEFAULT_ROSTER)
        performance = performance or Path(DEFAULT_PERFORMANCE)
    later = _as_of(None, None, proposed_as_of) if proposed_as_of else as_of
    if not base.startswith("git:"):  # a revision of the project's rules keeps them
        enrollments = _paired_enrollments(base, enrollments)
    with (
        load_rule_sets(base, proposed) as (base_rules, proposed_rules),
        _memory(base_rules, max(as_of, later), db, enrollments, proposed_rules) as memory,
    ):
        impact = compare(
            base_rules,
            proposed_rules,
            roster,
            performance,
            as_of,
            later,
            f"{base} as of {as_of}",
            f"{proposed} as of {later}",
            workers or default_workers(),
            through,
            memory,
            cluster,
        )
    click.echo(
        impact_text(impact, base_rules.fingerprint, proposed_rules.fingerprint, show_all, limit)
    )
    if csv_path:
        write_moves_csv(impact, csv_path)
        click.echo(f"\nWrote {counted(len(impact.moves), 'move')} to {csv_path}")
    if html_path:
        click.echo(f"Wrote {build_diff_report(impact, html_path)}")


@cli.command(name="explain")
@click.argument("partner_id", required=False)
@click.option(
    "--file",
    "json_file",
    type=click.Path(dir_okay=False),
    help="Read the partner from a JSON file instead of the roster.",
)
@RULES_OPTION
@click.option(
    "--roster",
    default=DEFAULT_ROSTER,
    show_default=True,
    help="Roster (.csv, .jsonl, .xlsx, or .parquet) to find PARTNER_ID in.",
)
@click.option(
    "--performance",
    default=DEFAULT_PERFORMANCE,
    show_default=True,
    help="Quarterly performance history (.csv, .jsonl, .xlsx, or .parquet).",
)
@click.option(
    "--as-of",
    callback=_as_of,
    metavar="DATE",
    help="Evaluate as of this date (YYYY-MM-DD). Default: today.",
)
@THROUGH_OPTION
@DB_OPTION
@ENROLLMENTS_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def explain_command(
    partner_id: str | None,
    json_file: str | None,
    rules_dir: str,
    roster: str,
    performance: str,
    as_of: dt.date,
    through: Quarter | None,
    db: Path | None,
    enrollments: Path | None,
    as_json: bool,
) -> None:
    """Decide one partner and explain every decision.

    For each classification row and program condition, it shows the partner's
    value, the threshold, and whether it held. For programs the partner did
    not get, it shows what is missing and by how much. Rules with memory
    read what the partner held in earlier runs (--db) and --enrollments, as
    runs do.

    \b
    Examples:
      eligibility explain P-1001 --as-of 2026-11-26
      eligibility explain --file partner.json --json
    """
    if bool(partner_id) == bool(json_file):
        raise click.UsageError("give a PARTNER_ID from the roster, or --file partner.json")
    ruleset = load_rules(rules_dir)
    enrollments = _paired_enrollments(rules_dir, enrollments)
    if json_file:
        partner = partner_from_json_file(ruleset, json_file)
    else:
        partner, set_aside = find_partner(ruleset, roster, performance, partner_id)
        for reject in set_aside:
            column = f"{reject.column}: " if reject.column else ""
            click.echo(
                f"warning: {reject.source_file}:{reject.row}: {column}{reject.reason}; "
                "row left out",
                err=True,
            )
    with _memory(ruleset, as_of, db, enrollments) as memory:
        if memory is not None:
            partner = dataclasses.replace(partner, memory=memory.of(partner.partner_id))
    explanation = explain(ruleset, partner, as_of, through)  # first: says a --through not ended
    decision = Evaluator(ruleset).decide([partner], as_of, through)[0]
    if explanation.decision() != decision:
        raise EngineError(
            "durable_rules and the independent explanation disagree for this "
            "partner; please report this with the rule set"
        )
    if as_json:
        data = {
            "decision": decision.to_json(),
            "rule_set_fingerprint": ruleset.fingerprint,
            "explanation": explanation.to_json(),
        }
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(
            explanation_text(ruleset, decision, explanation, partner.values.get("partner_name"))
        )


@cli.command()
@RULES_OPTION
@click.option(
    "--roster",
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help=f"Roster (.csv, .jsonl, .xlsx, .parquet or a folder of them). Default: {DEFAULT_ROSTER} "
    f"with {DEFAULT_PERFORMANCE}.",
)
@click.option(
    "--performance",
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help="Quarterly performance history, one row per partner and quarter.",
)
@click.option(
    "--min-quarter-share",
    type=click.FloatRange(0, 100),
    default=50,
    show_default=True,
    metavar="PERCENT",
    help="Stop unless the last quarter read (--through, else the last complete on "
    "--as-of) has figures for at least this share of the partners that reported in "
    "the four quarters before it (its figures are not in yet otherwise); 0 decides anyway.",
)
@click.option(
    "--max-rejects",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PERCENT",
    help="Stop, before anything is recorded, when more than this share of the "
    "roster's rows is rejected. Default: the rule set's max_rejects, else 5.",
)
@click.option(
    "--encoding",
    metavar="NAME",
    help="Read the roster and history CSV files in this encoding (utf-8, utf-16, "
    "cp1252, latin-1, ...). Default: found from the bytes (UTF-8, UTF-16 with its "
    "mark, or Windows-1252); summary.json says which.",
)
@click.option(
    "--max-moves",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PERCENT",
    help="Hold the run when more than this share of the partners changes tier, "
    "classification or engagement model since the previous run: its letters wait "
    "until 'eligibility release RUN'. Default: the rule set's max_moves, else 20.",
)
@click.option(
    "--no-performance",
    is_flag=True,
    help="Decide without a performance history on purpose: every metric of "
    "history (revenue_4q, attainment_4q, ...) is then missing. Without this, a "
    "--roster given without --performance stops the run.",
)
@click.option(
    "--as-of",
    callback=_as_of,
    metavar="DATE",
    help="Decide as of this date (YYYY-MM-DD). Default: today.",
)
@THROUGH_OPTION
@click.option(
    "--out",
    "out_dir",
    default=DEFAULT_OUT,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder.",
)
@WORKERS_OPTION
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 1) if any row is rejected; the rejects go to "
    "--out/stopped-run/rejects.csv, and nothing else is written or recorded.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@DB_OPTION
@click.option("--report", is_flag=True, help="Also write the HTML run report (report.html).")
@click.option(
    "--force",
    is_flag=True,
    help="Write into an --out folder that holds files this program did not write "
    "(they are left alone).",
)
@click.option(
    "--letters/--no-letters",
    default=True,
    show_default=True,
    help="Write every partner's letter to the --out folder's letters/ (see 'eligibility letters').",
)
@click.option(
    "--letter-format",
    "letter_formats",
    multiple=True,
    type=click.Choice(list(LETTER_FORMATS)),
    help="Letter format; repeat for several. Default: text, html, and eml.",
)
@click.option(
    "--templates",
    "templates_dir",
    default=DEFAULT_TEMPLATES,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Letter templates.",
)
@ENROLLMENTS_OPTION
@CLUSTER_OPTION
def run(
    rules_dir: str,
    roster: Path | None,
    performance: Path | None,
    min_quarter_share: float,
    max_rejects: float | None,
    encoding: str | None,
    max_moves: float | None,
    no_performance: bool,
    as_of: dt.date,
    through: Quarter | None,
    out_dir: Path,
    workers: int | None,
    strict: bool,
    quiet: bool,
    db: Path | None,
    report: bool,
    force: bool,
    letters: bool,
    letter_formats: tuple[str, ...],
    templates_dir: Path,
    enrollments: Path | None,
    cluster: str | None,
) -> None:
    """Decide every partner of a roster and write the results to --out.

    Writes decisions.jsonl (every decision, why programs were missed, and
    the metrics decided on),
    enrollments.csv, rejects.csv (bad rows with row number and reason),
    changes.csv (what changed since the last run of these rules over this
    roster), summary.json, and every partner's letter in letters/ (see
    'eligibility letters'). The run is recorded in the run history.

    Each run writes into a folder of its own, --out/runs/<time>-run<id>/, which
    becomes current (--out/current, and the names above in --out) only once
    complete: a run stopped at any moment leaves the previous run in place.
    A second run on the same --out or --db stops at once while one is going.

    \b
    Examples:
      eligibility run --as-of 2026-11-26
      eligibility run --roster crm.xlsx --performance quarters.csv --out q4 --strict
      eligibility run --letter-format eml --report
    """
    performance = _paired_performance(roster, performance, no_performance)
    enrollments = _paired_enrollments(rules_dir, enrollments)
    if no_performance and performance is not None:
        raise UsageError("give either --performance FILE or --no-performance, not both")
    if roster is None:
        roster = Path(DEFAULT_ROSTER)
        if not no_performance:
            performance = performance or Path(DEFAULT_PERFORMANCE)
    ruleset = load_rules(rules_dir)
    options = RunOptions(
        roster=roster,
        performance=performance,
        as_of=as_of,
        through=through,
        out_dir=out_dir,
        workers=workers or default_workers(),
        strict=strict,
        db=db or Path(DEFAULT_DB),
        without_history=no_performance,
        min_quarter_share=min_quarter_share / 100,
        max_rejects=None if max_rejects is None else max_rejects / 100,
        max_moves=None if max_moves is None else max_moves / 100,
        encoding=encoding,
        report=build_report if report else None,
        force=force,
        letters=RunLetters(templates_dir, letter_formats or tuple(LETTER_FORMATS))
        if letters
        else None,
        enrollments=enrollments,
        cluster=cluster,
    )
    bar = _ProgressLine() if not quiet and sys.stderr.isatty() else None
    try:
        result = run_batch(ruleset, options, bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    summary = result.summary
    partners = summary["partners"]
    if result.failed_strict:
        raise DataError(
            f"--strict: {partners['rejected']} roster rows and "
            f"{result.history_rejects} history rows rejected; see "
            f"{result.out_dir / 'rejects.csv'} (nothing else was written or recorded; "
            f"the current run in {out_dir} is as it was)"
        )
    letter_summary = result.letters
    if quiet:
        return
    click.echo(
        f"Run {result.run_id} as of {summary['as_of']}"
        + (f", figures through {through}" if through else "")
        + f": {counted(partners['rows_read'], 'row')} read, "
        f"{counted(partners['decided'], 'partner')} decided, {partners['rejected']:,} rejected"
        + (
            f" (and {counted(result.history_rejects, 'history row')})"
            if result.history_rejects
            else ""
        )
        + "."
    )
    click.echo(
        "Wrote "
        + ", ".join(str(out_dir / name) for name in OUTPUT_FILES)
        + (f", {out_dir / 'report.html'}" if report else "")
        + f" (run folder {result.out_dir})"
    )
    counts = summary["changes"]["counts"]
    previous = summary["changes"]["previous_run"]
    if previous is None:
        click.echo("No earlier run of these rules over this roster: no changes to list.")
    else:
        listed = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items() if n)
        click.echo(f"Changes since run {previous}: {listed or 'none'}.")
    if summary["engagement_models"]:
        click.echo(
            "Engagement models: "
            + ", ".join(
                f"{ruleset.engagement_models[m].name} {n}"
                for m, n in summary["engagement_models"].items()
            )
        )
    click.echo(
        "Programs: "
        + (
            ", ".join(f"{ruleset.program(p).name} {n}" for p, n in summary["programs"].items() if n)
            or "nobody enrolled"
        )
    )
    kept = kept_text(summary)
    if kept:
        click.echo(f"Kept by memory, not qualifying now: {kept} (enrollments.csv says until when)")
    if letter_summary is not None and result.held is None:
        click.echo(letters_text(letter_summary))
    if result.held is not None:
        count = letter_summary["letters"] if letter_summary else 0
        click.echo(
            f"HELD: {result.held['reason']}. The {count} letters are kept in "
            f"{result.out_dir / 'held-letters'}; look at the changes (changes.csv, "
            f"--report), then 'eligibility release {result.run_id}' lets them out."
        )


class _ProgressLine:
    """Partners (or letters) done, rate, and time left, redrawn in place on stderr."""

    def __init__(self) -> None:
        self.last = 0.0

    def update(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        rate = p.count / p.elapsed if p.elapsed else 0
        left = ""
        if p.total and p.done:
            share = min(p.done / p.total, 1.0)
            remaining = p.elapsed * (1 - share) / share if share else 0
            left = f"  {share:6.1%}  about {int(remaining) // 60}:{int(remaining) % 60:02d} left"
        click.echo(f"\r  {p.count:>10,} {p.what}  {rate:>8,.0f}/s{left}  ", nl=False, err=True)

    def close(self) -> None:
        if self.last:
            click.echo("", err=True)


@cli.command(name="report", short_help="Write the self-contained HTML report of a run.")
@OUT_DIR_ARGUMENT
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the report. Default: DIR/report.html.",
)
@click.option(
    "--diff",
    "moves",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV from 'eligibility diff --csv', shown as a what-if section.",
)
def report_command(out_dir: Path, output: Path | None, moves: Path | None) -> None:
    """Write a self-contained HTML report of the run whose outputs are in DIR.

    Totals and rejects, charts of the distribution by classification,
    engagement model, and program, the changes since the previous run, and a
    searchable, sortable partner table; click a partner for its decisions and
    why it missed each other program. The file needs no network: open it in
    any browser. A large run shows at most 5,000 partners (those with changes
    first), 2,000 changes and 2,000 rejects; the run's files hold them all.

    \b
    Examples:
      eligibility report out/
      eligibility diff --csv moves.csv && eligibility report out/ --diff moves.csv
    """
    click.echo(f"Wrote {build_report(out_dir, output, moves)}")


@cli.command(name="letters", short_help="Write every partner's letter for a run.")
@OUT_DIR_ARGUMENT
@click.option(
    "--run",
    "run_id",
    type=int,
    default=None,
    help="A run from the history instead of DIR: its output folder is used.",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Run-history database, with --run. Default: ${DB_ENV}, else ./{DEFAULT_DB}.",
)
@click.option(
    "--rules", "rules_dir", default=DEFAULT_RULES, show_default=True, help="The run's rules folder."
)
@click.option(
    "--templates",
    "templates_dir",
    default=DEFAULT_TEMPLATES,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Letter templates.",
)
@click.option(
    "--letter-format",
    "--format",
    "letter_formats",
    multiple=True,
    type=click.Choice(list(LETTER_FORMATS)),
    help="Letter format; repeat for several. Default: text, html, and eml.",
)
@ONLY_CHANGED_OPTION
@click.option(
    "--roster",
    type=click.Path(path_type=Path),  # a Parquet dataset is a folder
    help="The run's roster, if it has moved since the run.",
)
@WORKERS_OPTION
def letters_command(
    out_dir: Path,
    run_id: int | None,
    db: Path | None,
    rules_dir: str,
    templates_dir: Path,
    letter_formats: tuple[str, ...],
    only_changed: bool,
    roster: Path | None,
    workers: int | None,
) -> None:
    """Write every partner's letter for the current run in DIR (or a run's own folder).

    One letter per partner, in its language (falling back to the default
    language where a template is missing), chosen from its decisions and
    its changes since the previous run: welcome, status, program enrolled or
    removed, tier or engagement change, at-risk warning, probation notice.
    Formats: text (Markdown), html (print-friendly, self-contained), and eml
    (an email with both parts). Files go to the run's letters/ (DIR/letters/),
    named after the partner_id (in folders of 5,000 partners when there are
    more), with an index.csv saying where each is; the folder is replaced
    only once every letter is written, and another run or letters pass on DIR
    stops at once meanwhile. Figures (metrics) come from the run's decisions.jsonl,
    as the rules saw them; names and contacts from the roster the run read.

    \b
    Examples:
      eligibility letters out/
      eligibility letters out/ --only-changed --letter-format eml
      eligibility letters --run 3
    """
    if run_id is not None:
        path = db or Path(DEFAULT_DB)
        if not path.exists():
            raise UsageError(f"no run history at {path} yet; 'eligibility run' creates it")
        runs = RunHistory(path)
        try:
            out_dir = Path(runs.run(run_id).output_folder)
        finally:
            runs.close()
        recorded = out_dir / "summary.json"
        if not recorded.is_file() or json.loads(recorded.read_text("utf-8"))["run"]["id"] != run_id:
            raise UsageError(
                f"the outputs of run {run_id} in {out_dir} have been replaced by a "
                "later run; run again to write its letters"
            )
    ruleset = load_rules(rules_dir)
    bar = _ProgressLine() if sys.stderr.isatty() else None
    try:
        summary = write_letters(
            ruleset,
            LetterOptions(
                out_dir,
                templates_dir,
                letter_formats or tuple(LETTER_FORMATS),
                only_changed,
                workers or default_workers(),
                roster,
            ),
            bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
    click.echo(letters_text(summary))


@cli.command(short_help="Send a run's letters by email (SMTP).")
@OUT_DIR_ARGUMENT
@click.option(
    "--smtp",
    "server",
    metavar="HOST:PORT",
    help="The mail server. Port by default: 465 with --ssl, 587 with --starttls, else 25.",
)
@click.option("--starttls", is_flag=True, help="Encrypt the connection with STARTTLS.")
@click.option("--ssl", "use_ssl", is_flag=True, help="Connect over TLS from the start (SMTPS).")
@click.option(
    "--cafile",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A CA certificate to trust besides the system's (a company or test CA).",
)
@click.option(
    "--confirm",
    is_flag=True,
    help="Really send. Without it, a dry run: what would be sent, to whom, and the first letter.",
)
@click.option(
    "--per-minute",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="Send at most N letters a minute (the server's rate limit).",
)
@click.option(
    "--suppress",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="An opt-out list (a CSV file with a column email or partner_id) whose "
    "partners get no letter; repeat for several.",
)
@ONLY_CHANGED_OPTION
@click.option(
    "--to-test",
    metavar="ADDRESS",
    help="Send every letter to this mailbox instead of the partners (not counted as sent).",
)
@click.option(
    "--retry-unconfirmed",
    is_flag=True,
    help="Send again the letters an earlier send could not confirm (check the server first).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="Tries again after a temporary failure (4xx) or a lost connection.",
)
@click.option(
    "--retry-wait",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait before the first retry; doubled for each next one.",
)
@DB_OPTION
def send(
    out_dir: Path,
    server: str | None,
    starttls: bool,
    use_ssl: bool,
    cafile: Path | None,
    confirm: bool,
    per_minute: float | None,
    suppress: tuple[Path, ...],
    only_changed: bool,
    to_test: str | None,
    retry_unconfirmed: bool,
    retries: int,
    retry_wait: float,
    db: Path | None,
) -> None:
    """Send the letters of the current run in DIR (its .eml files) over SMTP.

    Without --confirm this is a dry run: how many letters would go, to whom
    (a sample), and the first letter. With --confirm, each letter is sent
    over one connection, reused, and recorded in the run history (Message-ID,
    partner, address, time, outcome): a second send sends only what was not
    sent, so each partner gets a letter at most once. If a send is killed,
    the one letter in flight is listed for a manual check, never sent again
    unless --retry-unconfirmed. Refusals (5xx) are recorded and listed;
    temporary failures (4xx) are retried with a growing wait, then left for
    the next send. Held runs and runs with unfinished letters are refused.
    The server's user and password come from $ELIGIBILITY_SMTP_USER and
    $ELIGIBILITY_SMTP_PASSWORD (never the command line), and need
    --starttls or --ssl.

    \b
    Examples:
      eligibility send out/
      eligibility send out/ --smtp mail.example.com --starttls --to-test me@example.com --confirm
      eligibility send out/ --smtp mail.example.com --starttls --per-minute 600 --confirm
    """
    if starttls and use_ssl:
        raise UsageError("give --starttls or --ssl, not both")
    security = "ssl" if use_ssl else "starttls" if starttls else "none"
    options = None
    if confirm:
        if not server:
            raise UsageError("--confirm sends: give the mail server with --smtp HOST:PORT")
        try:
            host, port = parse_server(server, security)
        except ValueError as error:
            raise UsageError(str(error)) from None
        options = ServerOptions(
            host,
            port,
            security,
            os.environ.get(SMTP_USER_ENV) or None,
            os.environ.get(SMTP_PASSWORD_ENV),
            str(cafile) if cafile else None,
            retries,
            retry_wait,
        )
    bar = _ProgressLine() if sys.stderr.isatty() and confirm else None
    try:
        report = send_letters(
            SendOptions(
                out_dir,
                db or Path(DEFAULT_DB),
                options,
                per_minute,
                suppress,
                only_changed,
                to_test,
                retry_unconfirmed,
            ),
            bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
    click.echo(send_text(report, options.name if options else ""))
    if report.dry_run and report.first_letter is not None:
        click.echo(f"\nThe first letter ({report.first_letter}):\n")
        click.echo(message_text(report.first_letter.read_bytes()))
    if report.stopped:
        click.echo(
            f"{'interrupted' if report.interrupted else 'error: ' + report.stopped}: the "
            "letters sent so far are recorded; send again to send the rest",
            err=True,
        )
        sys.exit(130 if report.interrupted else 1)


SCHEMA_NAMES = {
    "rules": (rule_file_schema, "a rule file (rules/*.yaml)"),
    "rule-tests": (case_file_schema, "a rule-test file (rules/tests/*.yaml)"),
    "letters": (settings_schema, "templates/letters.yaml"),
    # Made from a rule set (--rules): its fields and figures.
    "partner": (partner_file_schema, "a partner file for 'eligibility explain --file'"),
}


@cli.command(short_help="Print the JSON Schema of rule files, rule tests, letters.yaml, ...")
@click.argument("name", required=False, type=click.Choice(list(SCHEMA_NAMES)))
@click.option(
    "--write",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the schemas into this folder (NAME.schema.json) instead: all four, or NAME's.",
)
@RULES_OPTION
def schema(name: str | None, folder: Path | None, rules_dir: str) -> None:
    """Print the JSON Schema (draft 2020-12) of NAME: rules, rule-tests,
    letters, or partner (a partner file for 'explain --file', made from the
    fields and history figures of the --rules rule set). Editors with the
    YAML language server (VS Code's YAML extension, JetBrains IDEs) then
    complete keys and underline mistakes as you type, in a file whose first
    line names the schema:

    \b
      # yaml-language-server: $schema=../schemas/rules.schema.json

    The schemas are made from the same lists of keys and types the rules
    loader checks; they judge a file's shape, and 'eligibility validate'
    still checks the rest (conditions, names). See docs/rule-authoring.md.

    \b
    Examples:
      eligibility schema rules > rules.schema.json
      eligibility schema --write schemas/
      eligibility schema partner --rules rules/ > partner.schema.json
    """
    if folder is None:
        if name is None:
            raise UsageError(f"name a schema ({', '.join(SCHEMA_NAMES)}), or give --write FOLDER")
        click.echo(_schema_text(name, rules_dir), nl=False)
        return
    folder.mkdir(parents=True, exist_ok=True)
    for each in SCHEMA_NAMES if name is None else (name,):
        path = folder / f"{each}.schema.json"
        path.write_text(_schema_text(each, rules_dir), encoding="utf-8")
        click.echo(f"Wrote {path} ({SCHEMA_NAMES[each][1]})")


def _schema_text(name: str, rules_dir: str) -> str:
    make = SCHEMA_NAMES[name][0]
    made = make(load_rules(rules_dir)) if name == "partner" else make()
    return json.dumps(made, indent=2, ensure_ascii=False) + "\n"


@cli.command(short_help="Let a held run's letters out.")
@click.argument("run_id", type=int)
@DB_OPTION
def release(run_id: int, db: Path | None) -> None:
    """Release run RUN_ID, held because more partners moved than the rules
    allow (max_moves, --max-moves): its letters move from held-letters/ to
    letters/, and its summary and the history say when. Look at its changes
    first (changes.csv, 'eligibility report').

    \b
    Examples:
      eligibility release 7
    """
    path = db or Path(DEFAULT_DB)
    if not path.exists():
        raise UsageError(f"no run history at {path} yet; 'eligibility run' creates it")
    summary = release_run(path, run_id)
    click.echo(
        f"Released run {run_id}: its letters are in {summary['letters']['folder']}/."
        if summary.get("letters")
        else f"Released run {run_id} (it wrote no letters)."
    )


@cli.command(short_help="List runs, show one in detail, or prune old ones.")
@click.argument("run_id", required=False, type=int)
@DB_OPTION
@click.option(
    "--keep",
    type=click.IntRange(1),
    metavar="N",
    help="Delete all but the newest N runs of each rule set over each roster "
    "(with their decisions and run folders), and compact the database.",
)
@click.option(
    "--forget-memory",
    is_flag=True,
    help="With --keep: delete runs of rules with memory (grace, protection, renewal, "
    "held) too, although their next runs read them and will decide differently.",
)
def history(run_id: int | None, db: Path | None, keep: int | None, forget_memory: bool) -> None:
    """List recorded runs, or show one run in detail, or prune old runs.

    Every run keeps each partner's decisions (about 200 bytes a partner), so
    that the next run can list what changed: a weekly run over a million
    partners adds about 10 GB a year. --keep deletes older runs. A partner
    missing from every run kept counts as new when it comes back. Runs of
    rules with memory are kept unless --forget-memory: later runs read them.

    \b
    Examples:
      eligibility history
      eligibility history 3
      eligibility history --keep 12
    """
    path = db or Path(DEFAULT_DB)
    if not path.exists():
        raise UsageError(f"no run history at {path} yet; 'eligibility run' creates it")
    if keep is not None and run_id is not None:
        raise UsageError("give a RUN_ID to show, or --keep to prune, not both")
    if keep is not None:
        deleted, decisions = prune_runs(path, keep, forget_memory)
        click.echo(
            f"Deleted {counted(len(deleted), 'run')} "
            f"({', '.join(map(str, deleted))}), their folders and their {decisions} "
            f"partner decisions; {path} is now {path.stat().st_size / 1e6:.1f} MB."
            if deleted
            else f"Nothing to delete: no rule set has more than {keep} runs over a roster."
        )
        return
    runs = RunHistory(path)
    try:
        click.echo(
            run_list_text(runs.runs())
            if run_id is None
            else run_text(runs.run(run_id), runs.sends_of_run(run_id))
        )
    finally:
        runs.close()


@contextlib.contextmanager
def _memory(
    ruleset: RuleSet,
    as_of: dt.date,
    db: Path | None,
    enrollments: Path | None,
    other: RuleSet | None = None,
) -> Iterator[MemorySource | None]:
    """What partners held before ``as_of`` (for rules with memory, else
    None): the runs of ``ruleset`` in the run history, if there is one yet,
    and the earlier enrollments. ``other``: a second rule set deciding with it."""
    if not ruleset.uses_memory and not (other is not None and other.uses_memory):
        yield None
        return
    imported = EarlierEnrollments(enrollments, ruleset) if enrollments else None
    path = db or Path(DEFAULT_DB)
    runs = RunHistory(path) if path.is_file() else None
    try:
        yield MemorySource(ruleset, as_of, runs, imported)
    finally:
        if runs is not None:
            runs.close()


def _rules_folder(argument: str | None, option: str) -> str:
    """The rules folder of validate and test: their RULES_DIR argument, or
    --rules (the same thing); both, naming two folders, is a usage error."""
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("rules_dir") == click.core.ParameterSource.COMMANDLINE
    if argument is not None and given and Path(argument).resolve() != Path(option).resolve():
        raise UsageError(
            f"give the rules folder once: RULES_DIR ({argument}) or --rules ({option})"
        )
    return argument if argument is not None else option


def _paired_enrollments(rules_dir: str, enrollments: Path | None) -> Path | None:
    """The project config's earlier enrollments go with the project config's
    rules only: they name that rule set's programs (its grace and protection
    read them), so other rules given on the command line do not get them."""
    ctx = click.get_current_context()
    if (
        enrollments is None
        or ctx.get_parameter_source("enrollments") != click.core.ParameterSource.DEFAULT_MAP
    ):
        return enrollments
    project_rules = load_project().values.get("rules", DEFAULT_RULES)
    if Path(rules_dir).resolve() == Path(project_rules).resolve():
        return enrollments
    click.echo(
        f"note: the project's earlier enrollments ({enrollments}) are for the rules in "
        f"{project_rules}, so they are not read with {rules_dir}; give --enrollments FILE "
        "to read some",
        err=True,
    )
    return None


def _paired_performance(
    roster: Path | None, performance: Path | None, without: bool = False
) -> Path | None:
    """The project config's history goes with the project config's roster
    only: a roster given on the command line is never joined with a history
    file it did not come with (a wrong history file decides wrong)."""
    ctx = click.get_current_context()
    from_project = ctx.get_parameter_source("performance") == click.core.ParameterSource.DEFAULT_MAP
    roster_given = ctx.get_parameter_source("roster") == click.core.ParameterSource.COMMANDLINE
    if from_project and (without or (roster is not None and roster_given)):
        return None
    return performance


def main() -> None:
    """The console command: SIGTERM (a service manager, ``kill``) stops a run
    as Ctrl-C does, so that nothing half-written is kept."""
    signal.signal(signal.SIGTERM, _interrupt)
    cli()


def _interrupt(_signal: int, _frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
