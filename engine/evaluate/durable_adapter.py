"""The only module that talks to durable_rules (durable-rules 2.0.28).

Rules are registered through durable_rules' host API, in its JSON ruleset
form. Facts are then fed to the registered ruleset's C engine one *level*
at a time (the compiler groups stages that do not depend on each other into
levels): the facts of a batch for level k go in one ``assert_facts`` call,
and every action durable_rules schedules is taken in order, recording the
decision. A partner's values and decisions wait in a record beside the
engine, and each level's fact holds only the attributes that level's rules
test (durable_rules parses and copies every attribute of every fact it is
given, so small facts, and few of them, are what make it fast: a partner
needs 4 facts under the reference rules, not 11 of about 50 attributes).
This is the same protocol the host uses
(``start_action_for_state`` / ``complete_and_start_action``) without its
per-action Python wrappers and state round trips, and it cut the time per
partner by more than half (figures in docs/benchmarks.md). JSON goes through
orjson, which is about three times faster here than the json module; the
numbers we send are integers (see ``compiler.encode``), which orjson and
durable_rules both pass through exactly.

durable_rules is unmaintained since 2020 and has sharp edges. Each one we
found is handled here or in the compiler, and covered by
``tests/test_durable_adapter.py``:

* ``Host()`` starts timer threads that dispatch actions in the background
  every 0.2 s. We subclass it without them, so actions run only inside our
  own calls, synchronously and in order.
* Ruleset names are unique per host (registering one twice raises a plain
  ``Exception``). Every :class:`DurableEngine` owns its own host, and the
  ruleset gets a fresh name.
* About 1,024 live session ids raise ``MemoryError``. Each batch uses one
  session id, and its state is deleted when the batch ends.
* ``assert_facts`` raises for the *whole batch* when any one fact matches no
  rule, and then runs none of the actions. Every stage's rules are
  exhaustive, so every fact matches; if one ever does not, that is an
  :class:`EngineError`, not a silent loss.
* Deleting a session's state after ``assert_facts`` failed can abort the
  process inside the C extension. After any failed batch the host is
  abandoned and the rules are registered in a fresh one.
* A rule fires once per satisfied branch of an ``$or`` (two ``$or`` of two
  branches under an ``$and`` fire four times). The compiler emits no ``$or``.
* ``$iall`` does not match an empty list. The compiler tests list size
  (``n_`` attributes) instead.
* A session identifies its facts by a 32-bit FNV-1a hash of their ``id``
  (generated from the content when absent). Two different facts whose hashes
  collide make ``assert_facts`` fail with ``MessageObservedException``:
  about once per million partners with generated ids. Every fact gets an
  ``id`` from :func:`session_ids`, whose hashes never repeat.
  Duplicate partner ids in a batch are refused before the engine sees them.
* An exception inside an action run by the host is stored in the session
  state instead of being raised. Our loop runs no host actions: the
  registered actions only refuse to run, and the state is checked anyway.
* After every action the session state is re-asserted as a fact
  (jruizgit/rules#288), so a rule that state can match re-fires forever.
  Every compiled rule requires its level (``st == k``), which state lacks.
* A condition on a fact attribute named ``id`` (the engine's own fact
  identity) re-fires forever. User names are prefixed (``v_``), so no rule
  ever reads ``id``.
* Its exception texts quote whole facts. We report only the exception type,
  because rosters hold personal data.
* Decisions are never trusted silently: after every batch each partner must
  have passed every stage exactly once and reached the final stage, and
  each leaf program must have fired at most once, and a batch whose level
  makes more than twice the actions its stages should (rules firing over
  and over) stops. Anything else is an :class:`EngineError`.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

import durable_rules_engine as _core
import orjson
from durable import engine as _durable

from engine.errors import EngineError
from engine.evaluate.compiler import (
    PARTNER,
    ROW_PREFIX,
    STAGE,
    CompiledRules,
    attr,
    ruleset_definition,
)

MAX_BATCH = 500  # facts per session; ~1,024 live sessions is durable's limit
DEFAULT_BATCH = 100  # larger batches slow durable down (facts accumulate per session)
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

    def __init__(self, compiled: CompiledRules, batch_size: int = DEFAULT_BATCH):
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self.compiled = compiled
        self.batch_size = batch_size
        self.name = f"eligibility_{next(_ruleset_ids)}"
        self._sids = itertools.count(1)
        # rule name -> (stage, decision attribute, value, what else it records)
        self._plans: dict[str, tuple] = {}
        for stage in compiled.stages:
            for rule_name, _, outcome in stage.rules:
                if outcome is None:
                    self._plans[rule_name] = (stage.index, None, None, {})
                    continue
                also = {attr(program): value for program, value in outcome.also}
                if outcome.row is not None:
                    also[ROW_PREFIX + outcome.decision] = outcome.row
                self._plans[rule_name] = (stage.index, attr(outcome.decision), outcome.value, also)
        # per level: what its rules test, and at most how many actions a fact
        # can make (one per stage, and one per leaf program on the final stage)
        self._levels = [
            (
                tuple(sorted({name for stage in stages for name in stage.reads})),
                sum(len(stage.rules) if stage.kind == "final" else 1 for stage in stages),
            )
            for stages in compiled.levels
        ]
        self._handle = self._register()

    def _register(self) -> int:
        definition = ruleset_definition(self.compiled)
        for rule_name in definition:
            definition[rule_name]["run"] = _not_run
        self._host = _QuietHost()
        try:
            self._host.set_rulesets({self.name: definition})
        except Exception as error:  # durable raises bare Exception for bad rulesets
            raise EngineError(f"durable_rules refused the compiled rules: {error}") from None
        return self._host.get_ruleset(self.name)._handle

    def decide(self, facts: Iterable[dict]) -> dict[str, dict]:
        """Run facts through every stage; returns {partner id: final fact}.

        The facts are taken over: each one becomes its partner's record, the
        final fact, with every decision added to it.
        """
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
            raise EngineError(
                f"partner ids must be unique in a batch; repeated: "
                f"{', '.join(map(str, duplicates[:5]))}"
            )
        sid = f"b{next(self._sids)}"
        try:
            finals, passes = self._run_stages(sid, facts)
            state = json.loads(_core.get_state(self._handle, sid))
            _core.delete_state(self._handle, sid)
        except BaseException as error:
            # Touching a session after a failed batch can abort the process
            # inside durable_rules: abandon this host and start a clean one.
            self._handle = self._register()
            if not isinstance(error, Exception):  # Ctrl-C, SIGTERM, exit: not an engine fault
                raise
            raise _engine_error(error) from None
        if state.get("exception"):
            raise EngineError("durable_rules stored an action error in its state")
        self._verify(partners, finals, passes)
        return finals

    def _run_stages(self, sid: str, facts: list[dict]) -> tuple[dict, dict]:
        """Feed the batch level by level; returns final records and pass counts.

        A partner's *record* holds its input values and every decision made so
        far. Each level's fact carries only what that level's rules test, taken
        from the record: durable_rules parses and copies every attribute of
        every fact it is given, so small facts, and few, are what make it fast.
        """
        finals: dict[str, dict] = {}
        passes: dict[tuple, int] = {}  # (partner, stage, decision) -> times fired
        plans = self._plans
        ids = iter(session_ids(len(facts) * len(self._levels)))
        records = {fact[PARTNER]: fact for fact in facts}  # decisions are added to them
        partner_of: dict[str, str] = {}  # fact id -> partner
        for level, (reads, most) in enumerate(self._levels):
            pending = []
            for partner, record in records.items():
                fact_id = next(ids)
                fact = {"id": fact_id}  # first: see _action
                fact.update((name, record[name]) for name in reads if name in record)
                fact["sid"] = sid
                fact[PARTNER] = partner
                fact[STAGE] = level
                pending.append(fact)
                partner_of[fact_id] = partner
            result = _core.assert_facts(self._handle, orjson.dumps(pending).decode())
            if result[0] == 1:
                raise _durable.MessageNotHandledException({})
            if result[0] == 2:
                raise _durable.MessageObservedException({})
            state_handle = result[1]
            # Rules that fire over and over (see the module docstring) stop here.
            budget = 2 * most * len(pending)
            started = _core.start_action_for_state(self._handle, state_handle)
            message = started[1] if started else None
            while message:
                budget -= 1
                if budget < 0:
                    raise EngineError("durable_rules fired rules over and over in a batch")
                rule_name, partner = _action(message, partner_of)
                stage, decision, value, also = plans[rule_name]
                key = (partner, stage, decision)
                passes[key] = passes.get(key, 0) + 1
                record = records[partner]
                if decision is None:
                    finals[partner] = record
                else:
                    record[decision] = value
                    if also:
                        record.update(also)
                message = _core.complete_and_start_action(self._handle, state_handle)
        return finals, passes

    def _verify(self, partners: list[str], finals: dict, passes: dict) -> None:
        """Each partner passed each stage once, reached the end, and no rule repeated."""
        stages = {
            (stage.index, None if stage.kind == "final" else attr(stage.decision))
            for stage in self.compiled.stages
        }
        seen: Counter = Counter()
        repeated = 0
        for (partner, stage, decision), count in passes.items():
            repeated += count > 1
            if (stage, decision) in stages:
                seen[partner] += 1
        short = [p for p in partners if seen[p] != len(stages) or p not in finals]
        if repeated or short or len(finals) != len(partners):
            raise EngineError(
                f"durable_rules lost or repeated decisions in a batch of {len(partners)} "
                f"partners: {len(short)} partners incomplete, {repeated} rules fired more than "
                f"once (first incomplete: {short[0] if short else None})"
            )


_ACTION_HEAD = '":{"m":{"id":"'


def _action(message: str, partner_of: dict[str, str]) -> tuple[str, str]:
    """The rule and partner of an action message, ``{"rule":{"m":{fact}}}``.

    durable_rules writes a fact's attributes in the order it was given them,
    and ours start with the fact id, so both are found without parsing the
    whole fact. Any message not shaped so is parsed in full.
    """
    end = message.find('"', 2)
    if message.startswith(_ACTION_HEAD, end):
        start = end + len(_ACTION_HEAD)
        partner = partner_of.get(message[start : message.find('"', start)])
        if partner is not None:
            return message[2:end], partner
    ((rule_name, matched),) = orjson.loads(message).items()
    return rule_name, matched["m"][PARTNER]


def fnv1a_32(text: str) -> int:
    """durable_rules' ``fnv1Hash32`` over an ASCII string (xor, then multiply)."""
    value = 2166136261
    for byte in text.encode("ascii"):
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


_ids: list[str] = []  # fact ids, the same sequence for every session
_id_hashes: set[int] = set()
_id_candidates = itertools.count()


def session_ids(count: int) -> list[str]:
    """At least ``count`` fact ids whose hashes never repeat: counter values in
    hex, skipping any whose hash an earlier one has. Every session takes them
    from the start, so they are made once per process."""
    while len(_ids) < count:
        candidate = format(next(_id_candidates), "x")
        value = fnv1a_32(candidate)
        if value not in _id_hashes:
            _id_hashes.add(value)
            _ids.append(candidate)
    return _ids


def _not_run(c: Any) -> None:
    """Registered as every rule's action; the adapter's own loop takes the
    actions instead, so the host never runs one."""
    raise EngineError("a durable_rules host action ran outside the adapter's loop")


def _engine_error(error: BaseException) -> EngineError:
    """Our error for anything raised while durable_rules ran a batch.

    Only the exception type is reported: durable's texts quote whole facts.
    """
    if isinstance(error, EngineError):
        return error
    if isinstance(error, _durable.MessageNotHandledException):
        return EngineError(
            "durable_rules found no rule for a fact; the compiled rules are "
            "not exhaustive (a bug in the compiler)"
        )
    if isinstance(error, _durable.MessageObservedException):
        return EngineError("durable_rules saw the same fact twice")
    if isinstance(error, MemoryError):
        return EngineError("durable_rules ran out of session memory")
    return EngineError(f"durable_rules failed while deciding a batch: {type(error).__name__}")
