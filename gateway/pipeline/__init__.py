"""The transport-neutral request pipeline: a typed request state, a table of small named
steps, and one record builder per kind of audit record. The REST edge (`gateway.edge.handlers`)
and any other edge only translate to and from it."""

from __future__ import annotations

from gateway.pipeline.run import REST_STEPS, Step, run_steps
from gateway.pipeline.state import Refusal, Reply, RequestState

__all__ = ["REST_STEPS", "Refusal", "Reply", "RequestState", "Step", "run_steps"]
