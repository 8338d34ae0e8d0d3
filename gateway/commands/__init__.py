"""Sub-commands of the `jurisgate` command line, one module per command group.

Each module exposes `register(subparsers)`, which adds its parser(s) and sets
`func` on them: a callable taking the parsed `argparse.Namespace` and returning
the process exit code. Heavy imports happen inside the command functions so that
`jurisgate --help` stays fast.
"""
