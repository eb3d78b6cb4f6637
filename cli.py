"""The ``eligibility`` command: a thin click layer over :mod:`engine`.

Exit codes: 0 ok, 1 bad rules or data (or an engine failure), 2 usage.
Errors go to stderr, without tracebacks.
"""
from __future__ import annotations

import datetime as dt
import json
import click

from engine.decide import Evaluator
from engine.errors import EligibilityError, EngineError
from engine.explain import explain
from engine.loader import load_rules
from engine.render import explanation_text
from engine.roster import find_partner, partner_from_json_file

DEFAULT_RULES = "rules"
DEFAULT_ROSTER = "examples/roster.csv"
DEFAULT_PERFORMANCE = "examples/performance.csv"


def _as_of(_ctx, _param, value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date; use YYYY-MM-DD") from None


class _Group(click.Group):
    """Turns the library's errors into a message on stderr and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EligibilityError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="partner-eligibility")
def cli() -> None:
    """Decide which partner type, engagement model, and programs each channel
    partner gets, from YAML rules a channel manager can read, and explain why.

    \b
    Examples:
      eligibility validate rules/
      eligibility explain P-1001 --as-of 2026-11-26
    """


@cli.command()
@click.argument("rules_dir", default=DEFAULT_RULES, metavar="[RULES_DIR]")
def validate(rules_dir: str) -> None:
    """Check a rule set and report every problem as file:line:column: message.

    Exits 0 when the rules are valid and 1 when there is any problem; nothing
    is evaluated. RULES_DIR defaults to rules/.

    \b
    Example:
      eligibility validate rules/
    """
    ruleset = load_rules(rules_dir)
    Evaluator(ruleset)  # compiling into durable_rules can fail too; find out now
    click.echo(f"{rules_dir}: valid. {ruleset.name}: {len(ruleset.fields)} fields, "
               f"{len(ruleset.metrics)} metrics, {len(ruleset.classifications)} classifications, "
               f"{len(ruleset.engagement_models)} engagement models, "
               f"{len(ruleset.programs)} programs (fingerprint {ruleset.fingerprint}).")


@cli.command(name="explain")
@click.argument("partner_id", required=False)
@click.option("--file", "json_file", type=click.Path(dir_okay=False),
              help="Read the partner from a JSON file instead of the roster.")
@click.option("--rules", "rules_dir", default=DEFAULT_RULES, show_default=True,
              help="Rules folder.")
@click.option("--roster", default=DEFAULT_ROSTER, show_default=True,
              help="Roster file (.csv or .jsonl) to find PARTNER_ID in.")
@click.option("--performance", default=DEFAULT_PERFORMANCE, show_default=True,
              help="Quarterly performance file (.csv or .jsonl).")
@click.option("--as-of", callback=_as_of, metavar="DATE",
              help="Evaluate as of this date (YYYY-MM-DD). Default: today.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def explain_command(partner_id: str | None, json_file: str | None, rules_dir: str, roster: str,
                    performance: str, as_of: dt.date, as_json: bool) -> None:
    """Decide one partner and explain every decision.

    For each classification row and program condition, it shows the partner's
    value, the threshold, and whether it held. For programs the partner did
    not get, it shows what is missing and by how much.

    \b
    Examples:
      eligibility explain P-1001 --as-of 2026-11-26
      eligibility explain --file partner.json --json
    """
    if bool(partner_id) == bool(json_file):
        raise click.UsageError("give a PARTNER_ID from the roster, or --file partner.json")
    ruleset = load_rules(rules_dir)
    if json_file:
        partner = partner_from_json_file(ruleset, json_file)
    else:
        partner = find_partner(ruleset, roster, performance, partner_id)
    decision = Evaluator(ruleset).decide([partner], as_of)[0]
    explanation = explain(ruleset, partner, as_of)
    if explanation.decision() != decision:
        raise EngineError("durable_rules and the independent explanation disagree for this "
                          "partner; please report this with the rule set")
    if as_json:
        data = {"decision": decision.to_json(), "rule_set_fingerprint": ruleset.fingerprint,
                "explanation": explanation.to_json()}
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(explanation_text(ruleset, decision, explanation,
                                    partner.values.get("partner_name")))


main = cli

if __name__ == "__main__":
    main()
