"""Benchmarks of FlashVID: ``python -m benchmarks`` is ``flashvid bench`` (see flashvid.bench)."""
