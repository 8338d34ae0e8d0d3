"""The policy engine: declarative YAML jurisdiction rules, compiled once, evaluated many times.

Public API (stable; the gateway calls only these):

* `load_policy_set(paths) -> LoadResult` with `.policy_set` (or None) and `.diagnostics`
* `PolicySet.revision`, `PolicySet.evaluate(context, *, explain=False) -> Decision`
* `Decision` and its parts, `Diagnostic`, `Location`
* `context_json_schema()` / `policy_json_schema()` for validation and editors
* `gateway.policy.cases` (`load_case_file`, `check_case`) for data-driven cases

The package is pure: it reads files when asked to load, and otherwise does no I/O.

Modules, in the order a policy set is built and used:

* the language: `language` (stages, context fields, operators), `ast` (the syntax tree),
  `vocabulary`, `codes` (diagnostic codes), `json_schemas` (for editors and contexts)
* parsing: `reader` (typed reads with diagnostics), `parse`, `parse_obligations`,
  `parse_vocabulary`
* compiling (`compile`, the stage table): `compilation` (shared state), `typecheck`,
  `absence`, `lower`, `index`; the compiled form is `ir`
* evaluating: `state`, `times`, `predicates` (the reference closures), `templates`,
  `codegen` (generated fast paths), `plans`, `memo`, `evaluate` (the engine), `verdicts`
  (denials and allows), `obligations`, `decision` (what it returns), `combine`
* `explain` (explanations, on top of `evaluate`), `policyset` (`PolicySet`), `loader`,
  `cases` (data-driven cases)
"""

from __future__ import annotations

from gateway.errors import Diagnostic, Location
from gateway.policy.decision import (
    AuditObligation,
    Decision,
    DecisionError,
    ImageMark,
    LegalBasis,
    MaskAction,
    Obligations,
    Problem,
    Remedy,
    Routing,
    SinkSuppression,
    Waiver,
)
from gateway.policy.explain import Explanation
from gateway.policy.json_schemas import context_json_schema, policy_json_schema
from gateway.policy.language import STAGES
from gateway.policy.loader import LoadResult, load_policy_set
from gateway.policy.policyset import PolicySet

__all__ = [
    "STAGES",
    "AuditObligation",
    "Decision",
    "DecisionError",
    "Diagnostic",
    "Explanation",
    "ImageMark",
    "LegalBasis",
    "LoadResult",
    "Location",
    "MaskAction",
    "Obligations",
    "PolicySet",
    "Problem",
    "Remedy",
    "Routing",
    "SinkSuppression",
    "Waiver",
    "context_json_schema",
    "load_policy_set",
    "policy_json_schema",
]
