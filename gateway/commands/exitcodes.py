"""The exit codes of every `jurisgate` command: one table, printed in `jurisgate --help`."""

from __future__ import annotations

from typing import Final

__all__ = ["ERROR", "INTERRUPTED", "INVALID", "NEGATIVE", "OK", "TABLE", "USAGE"]

#: Success: an allow, a valid log, every case passing, a command done.
OK: Final = 0
#: The command ran and the answer is no: a deny from `policy eval`, an audit log that fails
#: `audit verify`, failing cases in `policy test`.
NEGATIVE: Final = 1
#: Usage error: unknown command or option, a missing or contradictory argument.
USAGE: Final = 2
#: An input file has diagnostics (configuration, policy, tenants, witness, case or context
#: file), or `serve` refuses to start on one; each is printed as `file:line:col: code: ...`.
INVALID: Final = 3
#: I/O or operational error: a file cannot be read or written, a key already exists, a port
#: cannot be bound, a helper process failed.
ERROR: Final = 4
#: Interrupted (SIGINT).
INTERRUPTED: Final = 130

TABLE: Final = f"""\
exit codes (every command):
  {OK}    success (allow, valid, all cases pass)
  {NEGATIVE}    the answer is no: deny (policy eval), invalid log (audit verify),
       failing cases (policy test)
  {USAGE}    usage error
  {INVALID}    diagnostics in an input file (configuration, policy, tenants, witness,
       cases, context); serve refusing to start
  {ERROR}    I/O or operational error (unreadable or unwritable file, port in use, ...)
  {INTERRUPTED}  interrupted"""
