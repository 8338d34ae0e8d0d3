"""`PolicySet`: the evaluation engine with explanations.

The engine (`evaluate.Evaluator`) records each rule's outcome when asked to explain;
this class turns those outcomes into an `Explanation` (`explain.py`). Keeping the two apart
lets `explain` depend on `evaluate` and never the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.policy.decision import Decision
from gateway.policy.evaluate import Evaluator
from gateway.policy.explain import Explanation, build_explanation, summary_explanation
from gateway.policy.state import EvalState

__all__ = ["PolicySet"]


class PolicySet(Evaluator):
    """An immutable, compiled set of policy packs.

    Build it with `gateway.policy.load_policy_set`; share it freely between requests and
    threads (evaluation never mutates it, apart from bounded memo caches of pure results).
    """

    __slots__ = ()

    def _explanation(
        self,
        decision: Decision,
        ctx: Mapping[str, Any],
        st: EvalState,
        outcomes: Mapping[int, str],
        last_stage: int,
    ) -> Explanation:
        return build_explanation(self, decision, ctx, st, outcomes, last_stage)

    def _summary_explanation(self, decision: Decision) -> Explanation:
        return summary_explanation(decision)
