"""Partner eligibility: rule files in, decisions, explanations and letters out.

The packages, lowest layer first; each imports only the ones above it in
this list (``tests/test_architecture.py`` holds them to it):

* :mod:`engine.errors`: the one exception hierarchy, caught by the CLI.
* :mod:`engine.ruleset`: what a rules folder says. YAML with marks, value
  types, expressions and metric functions, conditions, the rule model,
  loading and the checks of meaning.
* :mod:`engine.evaluate`: deciding partners. Partner records, the
  durable_rules compiler and adapter (the only importer of durable),
  decisions, explanations and the requirements a condition puts on a partner.
* :mod:`engine.data`: files and databases. Roster readers, the
  performance-history join, rejects, atomic outputs, the run history.
* :mod:`engine.letters`: what a letter says and how it looks. Facts,
  settings, rendering in the Jinja2 sandbox, email, template checks.
* :mod:`engine.run`: batch work over a roster. The run driver, the chunk
  worker, the worker pool, the letters pass, what-if impact.
* :mod:`engine.report`: showing results. Terminal text and the HTML report.
* :mod:`engine.testing`: rule tests kept with the rules, and their pytest plugin.

See docs/architecture.md for how one roster row becomes a decision and a letter.
"""
