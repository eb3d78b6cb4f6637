"""Broken rule files never crash: the reference rules, mutated at random
(characters, lines, indentation, numbers), either load, compile and decide
as the explainer does, or stop with problems that name a file and a line.

A traceback, a hang or a rule set that validate accepts but durable_rules
cannot decide is a failure. The time bound is generous (this machine's
speed drifts); what it catches is exponential blow-up, which takes minutes.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import AS_OF, ROOT, load_example_partners
from engine.errors import RuleSetError
from engine.evaluate.decide import Evaluator
from engine.evaluate.explain import explain
from engine.ruleset.loader import load_rules

FILES = sorted(p.name for p in (ROOT / "rules").glob("*.yaml"))
TEXTS = {name: (ROOT / "rules" / name).read_text(encoding="utf-8") for name in FILES}
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
CHARACTERS = list(" :-[]{}'\"#%$,.\t\n\x00\x01\u200b\u00e9&*!|>") + ["0", "9", "a", "Z"]
NUMBERS = ["0", "-1", "1e400", "9" * 40, "0.0000001", "100", "1,5", "007", "2.5", ""]
SECONDS = 20  # per mutated rule set; exponential blow-ups took minutes


@st.composite
def mutations(draw):
    """(file name, mutated text): one to three random edits of one file."""
    name = draw(st.sampled_from(FILES))
    text = TEXTS[name]
    for _ in range(draw(st.integers(1, 3))):
        lines = text.splitlines(True) or ["\n"]
        kind = draw(st.sampled_from(["char", "delete", "duplicate", "swap", "indent", "number"]))
        at = draw(st.integers(0, len(lines) - 1))
        if kind == "char":
            line = lines[at]
            pos = draw(st.integers(0, max(len(line) - 1, 0)))
            lines[at] = line[:pos] + draw(st.sampled_from(CHARACTERS)) + line[pos + 1 :]
        elif kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif kind == "indent":
            lines[at] = (" " * draw(st.sampled_from([1, 2, 4]))) + lines[at]
            if draw(st.booleans()):
                lines[at] = lines[at].lstrip(" ")
        else:
            found = list(NUMBER.finditer(text))
            if found:
                match = draw(st.sampled_from(found))
                replacement = draw(st.sampled_from(NUMBERS))
                text = text[: match.start()] + replacement + text[match.end() :]
                continue
        text = "".join(lines)
    return name, text


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutations())
def test_a_mutated_rule_file_loads_and_decides_or_names_file_and_line(mutation):
    name, text = mutation
    with tempfile.TemporaryDirectory() as folder:
        rules = Path(folder) / "rules"
        shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
        (rules / name).write_text(text, encoding="utf-8")
        started = time.perf_counter()
        try:
            ruleset = load_rules(rules)
        except RuleSetError as error:
            assert error.problems, str(error)
            for problem in error.problems:
                assert problem.file.startswith(str(rules)), problem
                assert problem.line >= 1 and problem.message, problem
            assert time.perf_counter() - started < SECONDS
            return
        evaluator = Evaluator(ruleset)
        partners = load_example_partners(ruleset)[:12]
        decided = evaluator.decide(partners, AS_OF)
        assert decided == [explain(ruleset, p, AS_OF).decision() for p in partners]
        assert time.perf_counter() - started < SECONDS
