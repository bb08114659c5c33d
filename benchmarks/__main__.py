"""``python -m benchmarks``: the same as ``flashvid bench``."""

import sys

from benchmarks.bench import main

sys.exit(main())
