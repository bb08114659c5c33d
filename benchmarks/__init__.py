"""FlashVID benchmarks: ``flashvid bench`` (also ``python -m benchmarks``).

``bench``: the command line, the timing loop and the result files; ``stages``: the timed units
(each pipeline stage of each provider) and their checks; ``floors``: the least time each stage
could take; ``plot``: PNG plots from the result files.
"""

from .bench import FIELDS, PROVIDERS, add_bench_command, main, run_command
from .stages import STAGES

__all__ = ["FIELDS", "PROVIDERS", "STAGES", "add_bench_command", "main", "run_command"]
