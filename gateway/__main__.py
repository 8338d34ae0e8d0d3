"""`python -m gateway` runs the `jurisgate` command line."""

import sys

from gateway.cli import main

sys.exit(main())
