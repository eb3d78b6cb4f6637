"""The command line: exit codes, stderr, and output a person can read."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import ROOT


def test_help_lists_commands(cli_run):
    result = cli_run("--help")
    assert result.exit_code == 0
    assert "validate" in result.output and "explain" in result.output


def test_validate_reference_rules(cli_run):
    result = cli_run("validate", "rules")
    assert result.exit_code == 0
    assert "valid" in result.output and "14 programs" in result.output


def test_validate_broken_rules_exits_1_with_located_message(cli_run, rules_copy):
    rules = rules_copy()
    path = rules / "programs.yaml"
    path.write_text(path.read_text().replace("certified_technical >= 10", "certified_tech >= 10"))
    result = cli_run("validate", str(rules))
    assert result.exit_code == 1
    assert "programs.yaml:" in result.stderr
    assert "unknown name 'certified_tech'; did you mean 'certified_technical'?" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_folders_and_partners_are_usage_errors(cli_run):
    """A folder or partner that is not there is a usage mistake (exit 2),
    said without a made-up file position; a partner id typed in the wrong
    case is suggested; no option the command lacks is suggested."""
    result = cli_run("validate", "no/such/rules")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no/such/rules: no such rules folder")
    assert "no/such/rules:1:1" not in result.stderr
    templates = cli_run("validate", "--templates", "no/such/templates")
    assert templates.exit_code == 2 and "no such templates folder" in templates.stderr
    assert "--no-letters to run" not in templates.stderr
    partner = cli_run("explain", "p-1006", "--as-of", "2026-11-26")
    assert partner.exit_code == 2
    assert "did you mean 'P-1006'? (ids are case-sensitive)" in partner.stderr


def test_explain_text(cli_run):
    result = cli_run("explain", "P-1006", "--as-of", "2026-11-26")
    assert result.exit_code == 0, result.stderr
    out = result.output
    assert "Partner P-1006 (Adatum Networks), as of 2026-11-26" in out
    assert "standing: at_risk  (row 5)" in out
    assert "certified_technical >= 10: needs at least 10, has 8 (2 short)" in out


def test_explain_json_matches_decision(cli_run):
    result = cli_run("explain", "P-1001", "--as-of", "2026-11-26", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.output)
    assert data["decision"]["engagement_model"] == "strategic_account"
    enrolled = [p["id"] for p in data["explanation"]["programs"] if p["enrolled"]]
    assert enrolled == data["decision"]["programs"]


def test_explain_from_json_file(cli_run, tmp_path):
    partner = tmp_path / "partner.json"
    partner.write_text(
        json.dumps(
            {
                "partner_id": "J-1",
                "partner_name": "From JSON",
                "country": "FR",
                "joined_on": "2020-01-01",
                "certified_technical": 3,
                "certified_sales": 2,
                "history": [{"quarter": "2026Q3", "revenue": "$10,000", "target": "9000"}],
            }
        )
    )
    result = cli_run("explain", "--file", str(partner), "--as-of", "2026-11-26")
    assert result.exit_code == 0, result.stderr
    assert "[x] Select Partner (select)" in result.output


def test_explain_bad_partner_data_exits_1(cli_run, tmp_path):
    partner = tmp_path / "partner.json"
    partner.write_text(
        json.dumps(
            {
                "partner_id": "J-2",
                "partner_name": "Bad",
                "country": "FR",
                "joined_on": "31/12/2020",
                "contact_email": "secret@example.com",
            }
        )
    )
    result = cli_run("explain", "--file", str(partner))
    assert result.exit_code == 1
    assert "joined_on: '31/12/2020' is not a date" in result.stderr
    assert "secret@example.com" not in result.stderr


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (
            {"certified_techincal": 12},
            "unknown key 'certified_techincal' in the partner; did you mean 'certified_technical'?",
        ),
        (
            {"history": [{"quarter": "2026Q3", "revenu": 5}]},
            "unknown key 'revenu' in history entry 1; did you mean 'revenue'?",
        ),
    ],
)
def test_explain_refuses_keys_the_rules_do_not_read(cli_run, tmp_path, extra, said):
    """A misspelt key would have been ignored and the partner decided on the
    field's default: a silent wrong explanation."""
    partner = tmp_path / "partner.json"
    record = {"partner_id": "J-3", "partner_name": "Typo", "country": "FR"}
    partner.write_text(json.dumps({**record, "joined_on": "2020-01-01", **extra}))
    result = cli_run("explain", "--file", str(partner), "--as-of", "2026-11-26")
    assert result.exit_code == 1 and said in result.stderr, result.stderr


def test_explain_unknown_partner_is_usage_error(cli_run):
    result = cli_run("explain", "P-0000")
    assert result.exit_code == 2
    assert "partner 'P-0000' is not in examples/roster.csv" in result.stderr


def test_explain_reads_partner_ids_as_a_run_does(cli_run, tmp_path):
    """A missing partner_id is no id (not the text 'None'); spaces around one are trimmed."""
    import json

    first = {"partner_id": None, "partner_name": "No id"}
    second = {"partner_id": "  P-7  ", "partner_name": "Spaced"}
    roster = tmp_path / "roster.jsonl"
    roster.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n", encoding="utf-8")
    result = cli_run("explain", "None", "--roster", str(roster))
    assert result.exit_code == 2 and "partner 'None' is not in" in result.stderr
    result = cli_run("explain", "P-7", "--roster", str(roster))
    assert "is not in" not in result.stderr


def test_explain_needs_a_partner(cli_run):
    result = cli_run("explain")
    assert result.exit_code == 2


def test_bad_as_of_is_usage_error(cli_run):
    result = cli_run("explain", "P-1001", "--as-of", "26/11/2026")
    assert result.exit_code == 2
    assert "use YYYY-MM-DD" in result.stderr


def test_explain_sets_aside_bad_history_rows_like_a_run(cli_run):
    result = cli_run("explain", "P-1005", "--as-of", "2026-11-26")
    assert result.exit_code == 0, result.stderr
    assert "examples/performance.csv:327: quarter: '2026Q5' is not a quarter" in result.stderr
    assert "row left out" in result.stderr


def test_explain_names_rows_whose_values_are_shifted(cli_run, tmp_path):
    """A value holding the delimiter without quotes shifts the values after
    it: such a roster row is refused and such a history row left out, as a
    run does, whatever the cells past the last column hold (an empty one only
    means that the last value was empty)."""
    lines = (ROOT / "examples" / "roster.csv").read_text(encoding="utf-8").splitlines()
    lines[3] += ","  # P-1003: one empty extra cell, as a shift leaves when the last value is empty
    lines[2] = lines[2].replace("Contoso Sécurité SA", "Contoso, Sécurité SA")  # P-1002
    roster = tmp_path / "roster.csv"
    roster.write_text("\n".join(lines) + "\n", encoding="utf-8")
    history = (ROOT / "examples" / "performance.csv").read_text(encoding="utf-8").splitlines()
    number = next(i for i, line in enumerate(history) if line.startswith("P-1001,"))
    history[number] = history[number].replace("P-1001,2024Q1,", "P-1001,2024Q1,1,")
    performance = tmp_path / "performance.csv"
    performance.write_text("\n".join(history) + "\n", encoding="utf-8")
    result = cli_run(
        "explain",
        "P-1002",
        "--roster",
        str(roster),
        "--performance",
        str(performance),
        "--as-of",
        "2026-11-26",
    )
    assert result.exit_code == 1
    assert (
        f"{roster}:3: partner P-1002: 22 values for 21 columns: an unquoted comma in "
        "'Contoso, Sécurité SA'? A value holding a comma must be in double quotes"
    ) in result.stderr
    shifted = cli_run("explain", "P-1003", "--roster", str(roster), "--as-of", "2026-11-26")
    assert (
        f"{roster}:4: partner P-1003: 22 values for 21 columns: more values than columns; "
        "a value holding a comma must be in double quotes"
    ) in shifted.stderr
    result = cli_run(
        "explain",
        "P-1001",
        "--roster",
        str(roster),
        "--performance",
        str(performance),
        "--as-of",
        "2026-11-26",
    )
    assert result.exit_code == 0, result.stderr
    assert (
        f"warning: {performance}:{number + 1}: 6 values for 5 columns: an unquoted comma "
        "in '1,957191.38'? A value holding a comma must be in double quotes; row left out"
    ) in result.stderr


def test_a_system_error_is_a_message_not_a_traceback(cli_run, tmp_path):
    """A folder that is a file, a permission refused, a full disk: the
    system's reason, on one line, and exit code 1."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = cli_run(
        "run",
        "--as-of",
        "2026-11-26",
        "--out",
        str(blocker / "out"),
        "--db",
        str(tmp_path / "h.sqlite"),
        "-q",
    )
    assert result.exit_code == 1
    assert result.stderr == f"error: {blocker / 'out'}: Not a directory\n"


def test_output_piped_into_a_reader_that_stops_early_is_not_an_error(monkeypatch, capfd):
    """`eligibility history | head -1` printed "error: Broken pipe": the
    reader closing the pipe is not worth a message. (The pipe is simulated:
    a real one only breaks once more than its buffer is written.)"""
    import sys

    import click

    import cli

    said: list = []

    def echo(message=None, file=None, nl=True, err=False, color=None):
        if not err:
            raise BrokenPipeError(32, "Broken pipe")
        said.append(message)

    monkeypatch.setattr(click, "echo", echo)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["eligibility", "explain", "P-1001", "--as-of", "2026-11-26"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 1  # click's way out of a closed pipe, quietly
    assert said == [] and capfd.readouterr().err == ""


def _invoke(*args: str, env: dict | None = None):
    from click.testing import CliRunner

    from cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def test_commands_work_from_any_folder_of_the_project(monkeypatch):
    """eligibility.toml at the project root is found from a subfolder: its
    paths are relative to it, not to where the command runs."""
    monkeypatch.chdir(ROOT / "docs")
    result = _invoke("validate")
    assert result.exit_code == 0, result.stderr
    assert result.output.startswith(f"{ROOT / 'rules'}: valid.")
    assert f"{ROOT / 'templates'}: valid." in result.output


def test_the_project_config_its_environment_overrides_and_its_mistakes(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "work" / "deep").mkdir(parents=True)
    shutil.copytree(ROOT / "rules", project / "my-rules")
    shutil.copytree(ROOT / "templates", project / "letters")
    shutil.copy(ROOT / "examples" / "roster.csv", project / "partners.csv")
    shutil.copy(ROOT / "examples" / "performance.csv", project / "figures.csv")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.eligibility]\nrules = "my-rules"\n'
        'templates = "letters"\nroster = "partners.csv"\nperformance = "figures.csv"\n'
        'db = "runs.sqlite"\nout = "results"\nworkers = 1\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(project / "work" / "deep")
    result = _invoke("run", "--as-of", "2026-11-26", "-q")
    assert result.exit_code == 0, result.stderr
    assert (project / "results" / "decisions.jsonl").is_file() and (
        project / "runs.sqlite"
    ).is_file()
    elsewhere = _invoke("history", env={"ELIGIBILITY_DB": str(tmp_path / "none.sqlite")})
    assert elsewhere.exit_code == 2 and "none.sqlite" in elsewhere.stderr
    assert "partners.csv    34       32         2" in _invoke("history").output

    config = project / "eligibility.toml"  # found before pyproject.toml in the same folder
    config.write_text(
        'rules = "my-rules"\ntemplates = "letters"\nroster = "partners.csv"\n'
        'performance = "figures.csv"\ndb = "runs.sqlite"\nout = "results"\n'
        'max_rejects = "1%"\n',
        encoding="utf-8",
    )
    guarded = _invoke("run", "--as-of", "2026-11-26", "-q")
    assert guarded.exit_code == 1 and "more than the 1% allowed" in guarded.stderr
    config.write_text('rules = "my-rules"\nrosters = "partners.csv"\n', encoding="utf-8")
    wrong = _invoke("validate")
    assert wrong.exit_code == 2 and "unknown key 'rosters'" in wrong.stderr
    config.write_text('rules = "my-rules"\npassword = "hunter2"\n', encoding="utf-8")
    secret = _invoke("validate")
    assert secret.exit_code == 2 and "ELIGIBILITY_SMTP_PASSWORD" in secret.stderr
    assert "hunter2" not in secret.stderr
    config.write_text("workers = 'two'\n", encoding="utf-8")
    typed = _invoke("validate")
    assert typed.exit_code == 2 and "'workers' must be a whole number" in typed.stderr
    config.write_text("rules = [\n", encoding="utf-8")
    broken = _invoke("validate")
    assert broken.exit_code == 2 and "not valid TOML" in broken.stderr


def test_validate_and_test_take_the_rules_folder_as_every_command_does(cli_run):
    for command in ("validate", "test"):
        by_option = cli_run(command, "--rules", "rules")
        assert by_option.exit_code == 0, by_option.output
        assert cli_run(command, "rules").exit_code == 0
        both = cli_run(command, "rules", "--rules", "tests/data/other_vendor/rules")
        assert both.exit_code == 2 and "give the rules folder once" in both.stderr


def test_a_metric_nothing_reads_is_a_warning_at_its_line(cli_run, rules_copy):
    rules = rules_copy()
    metrics = rules / "metrics.yaml"
    lines = metrics.read_text(encoding="utf-8").splitlines()
    metrics.write_text(
        "\n".join([*lines, "  leftover:", "    value: certified_total * 2"]) + "\n",
        encoding="utf-8",
    )
    result = cli_run("validate", str(rules), "--templates", "templates")
    assert result.exit_code == 0
    assert (
        f"warning: {metrics}:{len(lines) + 1}:3: metric 'leftover' is computed but nothing reads it"
    ) in result.stderr
    assert cli_run("validate", str(rules), "--strict").exit_code == 1
    clean = cli_run("validate", "rules")
    assert "warning" not in clean.stderr  # the reference rules read everything they compute
