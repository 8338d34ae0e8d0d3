"""Execution plans: the candidate rules of one index lookup, grouped into stage chunks,
each chunk with a generated runner that applies its checks in sequence.

Rule 1: a runner has exactly the order and results of the evaluator's general loop when
nothing raises; any exception makes it return False, and the loop reruns the chunk (after
`rollback`) to record the error.
Rule 2: the generated source holds only names chosen here; rules, predicates and times are
bound constants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway.policy.codegen import define, positions_of
from gateway.policy.ir import CompiledRule
from gateway.policy.language import STAGES
from gateway.policy.memo import BoundedMemo
from gateway.policy.state import EvalState

__all__ = ["Plan", "build_plan", "rollback"]


#: One candidate rule in a plan: the rule, its residual predicate, whether it has an
#: effective window, what a match does (`DENY`, `KEEP`, `SHADOW`) and its position.
Entry = tuple[CompiledRule, Any, bool, int, int]
#: Runs one stage chunk's checks in sequence (see `_generate_chunk`); False when a check
#: raised and the chunk must be rerun by the general loop.
ChunkRunner = Callable[[Any, EvalState, Any, list[Any], list[Any], list[str]], bool]
#: A lookup's plan: its non-audit candidates in stage chunks (each with its generated
#: runner, None when a rule has exceptions), and its audit positions.
Plan = tuple[tuple[tuple[int, tuple[Entry, ...], "ChunkRunner | None"], ...], tuple[int, ...]]

_AUDIT = STAGES.index("audit")
DENY, KEEP, SHADOW = 0, 1, 2


def build_plan(
    rules: Sequence[CompiledRule],
    mask: int,
    runners: BoundedMemo[tuple[int, ...], ChunkRunner | None],
) -> Plan:
    """Group the candidate rules of one lookup by stage, audit rules apart; `runners` keeps
    the chunk runners shared by the plans that hold the same chunk."""
    chunks: list[tuple[int, list[Entry]]] = []
    audit: list[int] = []
    for pos in positions_of(mask):
        rule = rules[pos]
        if rule.stage_index == _AUDIT:
            audit.append(pos)
            continue
        kind = (DENY if rule.denies else KEEP) if rule.enforced else SHADOW
        entry = (rule, rule.rest, rule.timed, kind, pos)
        if chunks and chunks[-1][0] == rule.stage_index:
            chunks[-1][1].append(entry)
        else:
            chunks.append((rule.stage_index, [entry]))
    return (
        tuple((stage, tuple(entries), _runner_for(entries, runners)) for stage, entries in chunks),
        tuple(audit),
    )


def _runner_for(
    entries: Sequence[Entry], runners: BoundedMemo[tuple[int, ...], ChunkRunner | None]
) -> ChunkRunner | None:
    key = tuple(entry[4] for entry in entries)
    if key in runners:
        return runners[key]
    return runners.remember(key, _generate_chunk(entries))


def rollback(
    entries: Sequence[Entry],
    denies: list[CompiledRule],
    matched: list[CompiledRule],
    dry: list[str],
) -> None:
    """Undo what a chunk runner added before one of its checks raised."""
    mine = {entry[0].pos for entry in entries}
    ids = {entry[0].id for entry in entries}
    denies[:] = [r for r in denies if r.pos not in mine]
    matched[:] = [r for r in matched if r.pos not in mine]
    dry[:] = [i for i in dry if i not in ids]


def _generate_chunk(entries: Sequence[Entry]) -> ChunkRunner | None:
    """Generate a function running one chunk's checks in sequence, with the outcome of
    each match written out, instead of the general loop's per-entry dispatch.

    Same order and results as the loop in `_decide` when nothing raises; any exception
    makes it return False (the loop then reruns the chunk and records the error). Rules
    with exceptions keep the general loop (None).
    """
    if any(entry[0].exceptions for entry in entries):
        return None
    constants: dict[str, Any] = {}

    def const(value: Any) -> str:
        name = f"K{len(constants)}"
        constants[name] = value
        return name

    lines = ["def chunk(ctx, st, at, denies, matched, dry):", "    try:"]
    for rule, rest, timed, kind, _pos in entries:
        tests = []
        if timed:
            if rule.start is not None:
                tests.append(f"not (at < {const(rule.start)})")
            if rule.end is not None:
                tests.append(f"not (at >= {const(rule.end)})")
        if rest is not None:
            tests.append(f"{const(rest)}(ctx, st)")
        if kind == DENY:
            action = f"denies.append({const(rule)})"
        elif kind == KEEP:
            action = f"matched.append({const(rule)})"
        else:
            action = f"dry.append({const(rule.id)})"
        if tests:
            lines.append(f"        if {' and '.join(tests)}:")
            lines.append(f"            {action}")
        else:
            lines.append(f"        {action}")
    lines += ["    except Exception:", "        return False", "    return True"]
    source = "\n".join(lines) + "\n"
    # SECURITY: rules, predicates and times are bound constants; the source holds only
    # names chosen here.
    runner: ChunkRunner = define(source, "chunk", constants, "chunk")
    return runner
