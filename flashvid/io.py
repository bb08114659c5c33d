"""Reading token files (``.pt``, ``.npz``, ``.safetensors``) and writing results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SUFFIXES = (".pt", ".pth", ".npz", ".safetensors")


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors in a ``.pt``/``.pth`` (a dict of tensors), ``.npz`` or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
        return {k: torch.as_tensor(v) for k, v in data.items()}
    if suffix == ".npz":
        with np.load(path) as data:
            return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {list(SUFFIXES)}")


def load_video(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` [F, N, D] and ``cls_attn`` [F, N] from a token file."""
    data = load_tensors(path)
    missing = [k for k in ("tokens", "cls_attn") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing {missing}; expected tensors named 'tokens' [F, N, D] "
                         f"and 'cls_attn' [F, N], found {sorted(data)}")
    return data["tokens"], data["cls_attn"]


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to ``.pt``/``.pth``, ``.npz`` or ``.safetensors`` (by suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if suffix in (".pt", ".pth"):
        torch.save(tensors, path)
    elif suffix == ".npz":
        # numpy has no bfloat16: store it as float32
        np.savez(path, **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy()
                          for k, v in tensors.items()})
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of "
                         f"{list(SUFFIXES)}")
