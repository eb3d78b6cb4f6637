"""The only module that talks to durable_rules (durable-rules 2.0.28).

durable_rules is unmaintained since 2020 and has sharp edges. Each one we
found is handled here and covered by ``tests/test_durable_adapter.py``:

* ``Host()`` starts timer threads that dispatch actions in the background
  every 0.2 s. We subclass it without them, so actions run only inside our
  own calls, synchronously and in order.
* Ruleset names are unique per host (registering one twice raises a plain
  ``Exception``). Every :class:`DurableEngine` owns its own host, and the
  ruleset gets a fresh name.
* About 1,024 live session ids raise ``MemoryError``. Each batch uses one
  session id, and its state is deleted when the batch ends, even on error.
* ``assert_facts`` raises ``MessageNotHandledException`` for the *whole batch*
  when any one fact matches no rule, and then runs none of the actions.
  Every stage's rules are exhaustive, so every fact matches; if one ever
  does not, that is an :class:`EngineError`, not a silent loss.
* A rule fires once per satisfied branch of an ``$or`` (two ``$or`` of two
  branches under an ``$and`` fire four times). The compiler makes every
  ``$or``'s branches mutually exclusive.
* ``$iall`` does not match an empty list. The compiler tests list size
  (``n_`` attributes) instead.
* Asserting an identical fact twice raises ``MessageObservedException``.
  Facts carry the partner id, and duplicate ids in a batch are refused
  before the engine sees them.
* An exception inside an action is stored in the session state instead of
  being raised. Our actions record their own errors, and the state is
  checked too; either becomes an :class:`EngineError`.
* After every action the session state is re-asserted as a fact
  (jruizgit/rules#288), so a rule that state can match re-fires forever.
  Every compiled rule requires its stage (``st == k``), which state lacks.
* A condition on a fact attribute named ``id`` (the engine's own fact
  identity) re-fires forever. User names are prefixed (``v_``), so no rule
  ever reads ``id``.
* Deleting a session's state after ``assert_facts`` raised can abort the
  process inside the C extension. After any failed batch the host is
  abandoned and the rules are registered in a fresh one.
* Decisions are never trusted silently: after every batch each partner must
  have passed every stage exactly once and reached the final stage.
  Otherwise it is an :class:`EngineError`.
"""
from __future__ import annotations

import itertools
from collections import Counter
from typing import Any, Iterable, Sequence

from durable import engine as _durable

from .compiler import PARTNER, STAGE, CompiledRules, Outcome, attr, ruleset_definition
from .errors import EngineError

MAX_BATCH = 500
_ruleset_ids = itertools.count(1)


class _QuietHost(_durable.Host):
    """A durable_rules host without the background dispatch threads."""

    def _run(self) -> None:  # noqa: D401 - overriding durable's thread starter
        self._d_timer = self._t_timer = None


class DurableEngine:
    """A compiled rule set registered in its own durable_rules host.

    ``decide`` takes facts (dicts of encoded values with a partner id) and
    returns each partner's final fact: every decision the rules made.
    Not thread-safe; use one engine per thread or process.
    """

    def __init__(self, compiled: CompiledRules, batch_size: int = MAX_BATCH):
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self.compiled = compiled
        self.batch_size = batch_size
        self.name = f"eligibility_{next(_ruleset_ids)}"
        self._sids = itertools.count(1)
        self._reset_batch()
        self._host = self._new_host()

    def _new_host(self) -> _QuietHost:
        definition = ruleset_definition(self.compiled)
        for stage in self.compiled.stages:
            for rule_name, _, outcome in stage.rules:
                definition[rule_name]["run"] = self._action(stage.index, rule_name, outcome,
                                                            stage.carry)
        host = _QuietHost()
        try:
            host.set_rulesets({self.name: definition})
        except Exception as error:  # durable raises bare Exception for bad rulesets
            raise EngineError(f"durable_rules refused the compiled rules: {error}") from error
        return host

    def _reset_batch(self) -> None:
        self._finals: dict[str, dict] = {}
        self._passes: Counter = Counter()
        self._errors: list[str] = []

    def _action(self, stage: int, rule_name: str, outcome: Outcome | None,
                carry: Sequence[str]):
        def action(c: Any) -> None:
            try:
                fact = c.m._d
                partner = fact[PARTNER]
                self._passes[(partner, stage)] += 1
                if outcome is None:  # the final stage: keep what was decided
                    self._finals[partner] = fact
                    return
                following = {PARTNER: partner, STAGE: stage + 1}
                for name in carry:
                    if name in fact:
                        following[name] = fact[name]
                following[attr(outcome.decision)] = outcome.value
                if outcome.row is not None:
                    following["r_" + outcome.decision] = outcome.row
                c.assert_fact(following)
            except BaseException as error:  # noqa: BLE001 - durable would swallow it
                # durable's exception texts embed whole facts: name only the type.
                partner = c.m._d.get(PARTNER, "?") if c.m is not None else "?"
                self._errors.append(f"rule {rule_name} for partner {partner}: "
                                    f"{type(error).__name__}")
        return action

    def decide(self, facts: Iterable[dict]) -> dict[str, dict]:
        """Run facts through every stage; returns {partner id: final fact}."""
        results: dict[str, dict] = {}
        batch: list[dict] = []
        for fact in facts:
            batch.append(fact)
            if len(batch) == self.batch_size:
                results.update(self._decide_batch(batch))
                batch = []
        if batch:
            results.update(self._decide_batch(batch))
        return results

    def _decide_batch(self, facts: list[dict]) -> dict[str, dict]:
        partners = [f[PARTNER] for f in facts]
        duplicates = [p for p, n in Counter(partners).items() if n > 1]
        if duplicates:
            raise EngineError(f"partner ids must be unique in a batch; repeated: "
                              f"{', '.join(map(str, duplicates[:5]))}")
        sid = f"b{next(self._sids)}"
        payload = [dict(f, sid=sid, **{STAGE: 0}) for f in facts]
        self._reset_batch()
        try:
            self._host.assert_facts(self.name, payload)
            state = self._host.get_state(self.name, sid)
            self._host.delete_state(self.name, sid)
        except BaseException as error:
            # Touching a session after a failed batch can abort the process
            # inside durable_rules: abandon this host and start a clean one.
            self._host = self._new_host()
            if isinstance(error, _durable.MessageNotHandledException):
                raise EngineError("durable_rules found no rule for a fact; the compiled rules "
                                  "are not exhaustive (a bug in the compiler)") from None
            if isinstance(error, _durable.MessageObservedException):
                raise EngineError("durable_rules saw the same fact twice") from None
            if isinstance(error, MemoryError):
                raise EngineError("durable_rules ran out of session memory") from None
            raise
        if self._errors:
            raise EngineError("an action failed inside durable_rules: " + self._errors[0])
        if state.get("exception"):
            raise EngineError("durable_rules stored an action error: "
                              + str(state["exception"]).splitlines()[0][:300])
        self._verify(partners)
        finals, self._finals = self._finals, {}
        return finals

    def _verify(self, partners: list[str]) -> None:
        """Every partner passed every stage exactly once and reached the end."""
        stages = len(self.compiled.stages)
        expected = {(p, s) for p in partners for s in range(stages)}
        wrong = {key: n for key, n in self._passes.items() if n != 1}
        missing = expected - set(self._passes)
        if wrong or missing or len(self._finals) != len(partners):
            example = next(iter(sorted(missing or wrong, key=str)), None)
            raise EngineError(
                f"durable_rules lost or repeated decisions in a batch of {len(partners)} "
                f"partners: {len(missing)} stage passes missing, {len(wrong)} repeated, "
                f"{len(self._finals)} of {len(partners)} finished (first: {example})")
