"""python -m bench.report RUN_DIR [RUN_DIR ...] [--out DIR] [--tensorboard DIR]"""

import sys

from bench.report.command import main

sys.exit(main())
