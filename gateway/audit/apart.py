"""A second core for large exports and verifications: one of a fixed set of audit tasks
run in a fresh interpreter (`python -m gateway.audit.apart`), while the calling process
does the rest of the work.

Rule 1: the helper is a new interpreter, not a fork: nothing of the caller's threads,
locks or `__main__` is copied or run again. Arguments go in and the result comes back as
JSON over pipes.
Rule 2: a helper that cannot start or fails raises `AuditError` from `result()`; callers
then do the task themselves, so the outcome never depends on the helper.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.audit.errors import AuditError

__all__ = ["TASKS", "Apart", "main"]

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


class Apart:
    """One task running in a helper interpreter."""

    def __init__(self, task: str, args: Any) -> None:
        self._stderr = tempfile.TemporaryFile()
        path = os.environ.get("PYTHONPATH", "")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (_PACKAGE_ROOT, path) if p))
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "gateway.audit.apart"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
            )
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"task": task, "args": args}).encode())
            self._proc.stdin.close()
        except OSError:
            self._proc = None

    def result(self) -> Any:
        """The task's result; raises `AuditError` when the helper did not deliver one."""
        proc = self._proc
        try:
            if proc is None:
                raise AuditError("the helper process did not start")
            assert proc.stdout is not None
            out = proc.stdout.read()
            proc.stdout.close()
            if proc.wait() != 0:
                self._stderr.seek(0)
                detail = self._stderr.read()[-2000:].decode(errors="replace")
                raise AuditError(f"the helper process failed: {detail}")
            try:
                return json.loads(out)["result"]
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(f"the helper process answered nonsense: {exc}") from None
        finally:
            self._stderr.close()

    def cancel(self) -> None:
        """Stop the helper (the caller no longer wants its result)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


#: The fixed set of tasks: name -> `module:function`, called with the task's JSON arguments.
#: Named, not imported, so this runner depends on none of the modules that start it.
TASKS: dict[str, str] = {
    "export-csv": "gateway.audit.export:csv_view_task",
    "verify-csv": "gateway.audit.verify.viewcheck:csv_digest_task",
}


def _run(task: str, args: Any) -> Any:
    target = TASKS.get(task)
    if target is None:
        raise AuditError(f"unknown task `{task}`")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(*args)


def main() -> int:
    """Read {task, args} from stdin, write {result} to stdout."""
    request = json.loads(sys.stdin.buffer.read())
    result = _run(request["task"], request["args"])
    sys.stdout.write(json.dumps({"result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
