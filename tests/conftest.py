import os
import sys
from pathlib import Path

import pytest

# Kernels run in the Triton CPU interpreter unless a GPU is present; must be set before launch.
if not os.environ.get("TRITON_INTERPRET"):
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def poison_empty(monkeypatch):
    """Every torch.empty inside the kernel launchers returns a poisoned buffer: NaN for floats,
    the most negative value for integers (never a valid index, -1 included), True for bools. An
    output or scratch element that a kernel fails to write then shows up as a wrong result (as in
    flash-linear-attention's tests). Yields the integer poison of a dtype."""
    import torch

    import flashvid_kernels.adts
    import flashvid_kernels.stats
    import flashvid_kernels.tstm

    real_empty = torch.empty

    def poison(dtype: torch.dtype):
        if dtype.is_floating_point:
            return float("nan")
        return True if dtype == torch.bool else torch.iinfo(dtype).min

    def empty(*size, **kwargs):
        t = real_empty(*size, **kwargs)
        return t.fill_(poison(t.dtype))

    class PoisonedTorch:
        """torch, except that ``empty`` poisons."""

        def __getattr__(self, name):
            return empty if name == "empty" else getattr(torch, name)

    for module in (flashvid_kernels.adts, flashvid_kernels.stats, flashvid_kernels.tstm):
        monkeypatch.setattr(module, "torch", PoisonedTorch())
    return poison
