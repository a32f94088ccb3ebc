"""`python -m bench.gate ...`: the same as `bench gate ...`."""

import sys

from bench.gate.command import main

sys.exit(main())
