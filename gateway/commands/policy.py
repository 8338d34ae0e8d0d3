"""`jurisgate policy check|test|eval|schema`: validate, test, try and describe policies.

Exit codes (the table in `gateway.commands.exitcodes`): 0 ok or allow; 1 a deny from `eval` or
failing cases; 2 usage; 3 policy, case or context diagnostics; 4 an unreadable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from gateway.policy import LoadResult

from gateway.commands.exitcodes import ERROR as EXIT_ERROR
from gateway.commands.exitcodes import INVALID as EXIT_INVALID
from gateway.commands.exitcodes import NEGATIVE as EXIT_DENY
from gateway.commands.exitcodes import OK as EXIT_OK
from gateway.commands.exitcodes import USAGE as EXIT_USAGE


def register(subparsers: Any) -> None:
    """Add the `policy` command group."""
    policy = subparsers.add_parser("policy", help="check, test and evaluate policy packs")
    sub = policy.add_subparsers(dest="policy_command", metavar="COMMAND")
    policy.set_defaults(func=lambda args: _usage(policy))

    check = sub.add_parser("check", help="load and validate policy files (exit 3 on problems)")
    check.add_argument("paths", nargs="+", type=Path, help="policy files or directories")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run the *.cases.yaml next to the packs")
    test.add_argument(
        "paths", nargs="+", type=Path, help="directories or case files to search for *.cases.yaml"
    )
    test.add_argument(
        "--policies",
        type=Path,
        action="append",
        help="policy paths (default: the directories given)",
    )
    test.add_argument(
        "--explain",
        choices=("fails", "full"),
        default="fails",
        help="explanation printed for a failing case",
    )
    test.add_argument("--format", choices=("text", "json"), default="text")
    test.add_argument("-v", "--verbose", action="store_true", help="list every case")
    test.set_defaults(func=cmd_test)

    ev = sub.add_parser("eval", help="evaluate one request context and print the decision")
    ev.add_argument(
        "--policies",
        type=Path,
        action="append",
        help="policy files or directories (default: ./policies)",
    )
    ev.add_argument(
        "--context", required=True, help="context file (JSON, or YAML by extension), or - for stdin"
    )
    ev.add_argument(
        "--explain",
        nargs="?",
        const="fails",
        choices=("fails", "full"),
        help="add the explanation (text on stderr, JSON under `explanation`)",
    )
    ev.add_argument(
        "--rule",
        metavar="ID",
        help="explain why this rule did or did not decide the request (text on stderr)",
    )
    ev.set_defaults(func=cmd_eval)

    replay = sub.add_parser(
        "replay",
        help="what a candidate policy would change in recorded traffic",
        description="Evaluate every recorded decision of the logs or bundles with the "
        "candidate policies and report what would change, by transition, rule, tenant and "
        "model. Exit 1 with --fail-on-change when anything would, 3 when the candidate does "
        "not load.",
    )
    replay.add_argument(
        "--log", type=Path, action="append", required=True, metavar="DIR|BUNDLE",
        help="an audit log directory or export bundle (repeat for several)",
    )  # fmt: skip
    replay.add_argument(
        "--policies", type=Path, action="append", required=True, help="candidate policies"
    )
    replay.add_argument("--tenant", action="append", default=[], help="only these tenants")
    replay.add_argument(
        "--from", dest="from_ts", metavar="TIME", help="only decisions at or after (RFC 3339)"
    )
    replay.add_argument(
        "--to", dest="to_ts", metavar="TIME", help="only decisions before (RFC 3339)"
    )
    replay.add_argument("--html", metavar="FILE", help="write an HTML report")
    replay.add_argument("--json", metavar="FILE", help="write the report as JSON (`-`: stdout)")
    replay.add_argument(
        "--csv", metavar="FILE", help="write one row per changed decision (id, tenant, ...)"
    )
    replay.add_argument(
        "--fail-on-change", action="store_true", help="exit 1 when any decision would change"
    )
    replay.set_defaults(func=cmd_replay)

    schema = sub.add_parser("schema", help="print the JSON Schema for policy files")
    schema.add_argument(
        "--context", action="store_true", help="print the request-context schema instead"
    )
    schema.set_defaults(func=cmd_schema)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _print_diagnostics(result: LoadResult, out: TextIO) -> None:
    from gateway.errors import format_diagnostics

    if result.diagnostics:
        print(format_diagnostics(result.diagnostics), file=out)


def _load(paths: list[Path]) -> LoadResult:
    from gateway.policy import load_policy_set

    return load_policy_set(paths)


def cmd_check(args: argparse.Namespace) -> int:
    """Validate policy files; 0 when they compile, 3 with diagnostics otherwise."""
    result = _load(args.paths)
    label = ", ".join(str(p) for p in args.paths)
    if args.format == "json":
        ps = result.policy_set
        print(
            json.dumps(
                {
                    "ok": result.ok,
                    "revision": ps.revision if ps else None,
                    "rules": len(ps.rules) if ps else 0,
                    "diagnostics": [d.to_json() for d in result.diagnostics],
                },
                indent=2,
            )
        )
        return EXIT_OK if result.ok else EXIT_INVALID
    _print_diagnostics(result, sys.stdout if result.ok else sys.stderr)
    if result.policy_set is None:
        print(f"FAIL: {label}", file=sys.stderr)
        return EXIT_INVALID
    ps = result.policy_set
    print(f"OK: {label} ({len(ps.rules)} rules in {len(ps.files)} files, {ps.revision})")
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    """Run case files; 0 all pass, 1 failures, 3 policy or case-file diagnostics."""
    from gateway.errors import format_diagnostics
    from gateway.policy.cases import check_case, load_case_file
    from gateway.policy.loader import discover_files

    policy_paths = args.policies or [p for p in args.paths if p.is_dir()]
    if not policy_paths:
        print("error: give --policies when testing single case files", file=sys.stderr)
        return EXIT_USAGE
    result = _load(policy_paths)
    if result.policy_set is None:
        _print_diagnostics(result, sys.stderr)
        print(f"FAIL: {', '.join(map(str, policy_paths))} (policies do not load)", file=sys.stderr)
        return EXIT_INVALID
    ps = result.policy_set
    files, problems = discover_files(args.paths, cases=True)
    if problems:
        print(format_diagnostics(problems), file=sys.stderr)
        return EXIT_INVALID
    if not files:
        print(
            f"error: no *.cases.yaml found under {', '.join(map(str, args.paths))}", file=sys.stderr
        )
        return EXIT_USAGE
    broken = False
    failed = 0
    total = 0
    report: list[dict[str, Any]] = []
    for found in files:
        case_file = load_case_file(found.path)
        if not case_file.ok:
            broken = True
            print(format_diagnostics(case_file.diagnostics), file=sys.stderr)
            print(f"ERROR: {found.display} (broken case file)", file=sys.stderr)
            report.append(
                {"file": found.display, "error": [d.to_json() for d in case_file.diagnostics]}
            )
            continue
        results = [check_case(ps, case) for case in case_file.cases]
        total += len(results)
        bad = [r for r in results if not r.passed]
        failed += len(bad)
        report.append(
            {
                "file": found.display,
                "cases": [
                    {
                        "case": r.case.label,
                        "passed": r.passed,
                        "failures": list(r.failures),
                        "decision": r.decision.to_json(include_explanation=not r.passed),
                    }
                    for r in results
                ],
            }
        )
        if args.format != "json":
            _print_case_results(found.display, results, args)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "revision": ps.revision,
                    "total": total,
                    "failed": failed,
                    "broken": broken,
                    "files": report,
                },
                indent=2,
            )
        )
    else:
        print(f"{total - failed} passed, {failed} failed")
    if broken:
        return EXIT_INVALID
    return EXIT_DENY if failed else EXIT_OK


def _print_case_results(display: str, results: list[Any], args: argparse.Namespace) -> None:
    """The text report of one case file: its status line, then each failed case explained."""
    bad = [r for r in results if not r.passed]
    status = "OK" if not bad else "FAIL"
    print(f"{status}: {display} ({len(results) - len(bad)}/{len(results)} passed)")
    for r in results:
        if r.passed:
            if args.verbose:
                print(f"  ok: {r.case.label}")
            continue
        loc = r.case.location
        print(f"{loc}: case_failed: case `{r.case.label}` failed")
        for failure in r.failures:
            print(f"  {failure}")
        if r.decision.explanation is not None:
            for line in r.decision.explanation.text(args.explain).splitlines():
                print(f"    {line}")


def _read_context(source: str) -> tuple[Any, str | None]:
    """Read a context file: JSON, or YAML for .yaml/.yml (dates become strings)."""
    from gateway.policy.cases import to_json_data
    from gateway.source import load_yaml

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{source}: io_error: cannot read context: {exc}"
    if source.endswith((".yaml", ".yml")):
        doc = load_yaml(text, source)
        if not doc.ok:
            return None, "\n".join(d.text() for d in doc.diagnostics)
        return to_json_data(doc.data), None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, (f"{source}:{exc.lineno}:{exc.colno}: context_json_error: {exc.msg.lower()}")


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a context; prints the decision JSON. 0 allow, 1 deny, 3 bad context or set."""
    from gateway.errors import format_diagnostics
    from gateway.policy.cases import context_diagnostics

    result = _load(args.policies or [Path("policies")])
    if result.policy_set is None:
        _print_diagnostics(result, sys.stderr)
        return EXIT_INVALID
    context, problem = _read_context(args.context)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_ERROR if ": io_error: " in problem else EXIT_INVALID
    diagnostics = context_diagnostics(context, args.context)
    if diagnostics:
        print(format_diagnostics(diagnostics), file=sys.stderr)
        return EXIT_INVALID
    explain = args.explain or ("fails" if args.rule else None)
    decision = result.policy_set.evaluate(context, explain=bool(explain))
    out = decision.to_json()
    if args.explain and decision.explanation is not None:
        out["explanation"] = decision.explanation.to_json(args.explain)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    if args.rule:
        from gateway.policy.explain import explain_rule

        print(explain_rule(result.policy_set, decision, context, args.rule), file=sys.stderr)
    elif args.explain and decision.explanation is not None:
        print(decision.explanation.text(args.explain), file=sys.stderr)
    return EXIT_OK if decision.allowed else EXIT_DENY


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of policy files (or of the request context)."""
    from gateway.policy import context_json_schema, policy_json_schema

    schema = context_json_schema() if args.context else policy_json_schema()
    print(json.dumps(schema, indent=2))
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    """`jurisgate policy replay`: the impact of a candidate policy on recorded decisions."""
    import contextlib
    import csv
    import itertools
    import json

    from gateway.replay.decisions import impact_html, iter_decision_records, policy_impact

    result = _load(args.policies)
    if result.policy_set is None:
        _print_diagnostics(result, sys.stderr)
        return EXIT_INVALID
    for log in args.log:
        if not log.is_dir():
            print(f"error: --log `{log}` is not a directory", file=sys.stderr)
            return 2
    window = _time_window(args.from_ts, args.to_ts)
    if isinstance(window, str):
        print(f"error: {window}", file=sys.stderr)
        return 2
    records = _with_progress(
        record
        for record in itertools.chain.from_iterable(iter_decision_records(log) for log in args.log)
        if window(record)
    )
    with contextlib.ExitStack() as stack:
        on_change = None
        if args.csv:
            writer = csv.writer(stack.enter_context(open(args.csv, "w", newline="")))
            writer.writerow(["decision_id", "seq", "tenant", "model", "recorded", "candidate"])

            def on_change(record: dict[str, Any], before: Any, after: Any) -> None:
                writer.writerow([record.get("decision_id"), record.get("seq"),
                                 record.get("tenant"), record.get("model"),
                                 before.describe(), after.describe()])  # fmt: skip

        impact = policy_impact(
            records, result.policy_set, tenants=frozenset(args.tenant), on_change=on_change
        )
    if args.json:
        text = json.dumps(impact.to_json(), indent=2, sort_keys=True) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text, encoding="utf-8")
    if args.html:
        Path(args.html).write_text(
            impact_html(impact, result.policy_set.revision, [str(log) for log in args.log]),
            encoding="utf-8",
        )
    if args.json != "-":
        _print_impact(impact, result.policy_set.revision)
    return 1 if args.fail_on_change and impact.changed else 0


def _time_window(from_ts: str | None, to_ts: str | None) -> Any:
    """A predicate on a record's `ts` for `--from`/`--to`, or an error message."""
    from datetime import datetime

    bounds: list[datetime | None] = []
    for flag, text in (("--from", from_ts), ("--to", to_ts)):
        if text is None:
            bounds.append(None)
            continue
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return f"{flag} `{text}` is not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)"
        if parsed.tzinfo is None:
            return f"{flag} `{text}` needs a time zone (e.g. Z)"
        bounds.append(parsed)
    start, end = bounds

    def within(record: dict[str, Any]) -> bool:
        if start is None and end is None:
            return True
        ts = datetime.fromisoformat(str(record.get("ts", "")).replace("Z", "+00:00"))
        return (start is None or ts >= start) and (end is None or ts < end)

    return within


def _with_progress(records: Any) -> Any:
    """Pass `records` through, counting them on a terminal's stderr every 10,000."""
    if not sys.stderr.isatty():
        yield from records
        return
    count = 0
    for count, record in enumerate(records, 1):
        if count % 10_000 == 0:
            print(f"\rreplayed {count:,} decisions", end="", file=sys.stderr, flush=True)
        yield record
    print(f"\rreplayed {count:,} decisions", file=sys.stderr)


def _print_impact(impact: Any, revision: str) -> None:
    print(
        f"candidate {revision}: {impact.changed} of {impact.compared} recorded decisions "
        f"would change ({impact.not_replayable} not replayable)"
    )
    for title, counts in (
        ("transition", impact.transitions),
        ("rule", impact.by_rule),
        ("tenant", impact.by_tenant),
        ("model", impact.by_model),
    ):
        for name, count in counts.most_common():
            print(f"  {title:10s} {count:6d}  {name}")
    for transition, ids in impact.samples.items():
        print(f"  e.g. {transition}: {', '.join(ids)}")
