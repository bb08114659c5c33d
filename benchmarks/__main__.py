"""``python -m benchmarks``: the same as ``flashvid bench``."""

import sys

from flashvid.bench import main

sys.exit(main())
