import os
import sys
from pathlib import Path

# Kernels run in the Triton CPU interpreter unless a GPU is present; must be set before launch.
if not os.environ.get("TRITON_INTERPRET"):
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, str(Path(__file__).parent))
