"""Reading token files (``.pt``, ``.npz``, ``.safetensors``) and writing results.

Every failure to read a file is a ``ValueError`` (or ``FileNotFoundError``) that names the file,
says what was wrong and what was expected, so the command line can print one line.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

SUFFIXES = (".pt", ".pth", ".npz", ".safetensors")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of "
                         f"{list(SUFFIXES)}")
    return suffix


def _numpy_globals() -> list:
    """What ``torch.load(weights_only=True)`` must allow to read plain numpy arrays."""
    core = "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    allowed = [importlib.import_module(core)._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def _load_pt(path: Path):
    """torch.load with weights_only (no arbitrary code); numpy arrays are allowed too."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as first:
        if "numpy" not in str(first):
            raise
    with torch.serialization.safe_globals(_numpy_globals()):
        return torch.load(path, map_location="cpu", weights_only=True)


def _as_tensor(path: Path, key: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(value))
    raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}"
                     f"{' of dtype object' if isinstance(value, np.ndarray) else ''}; expected a "
                     "tensor (or a numeric numpy array)")


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors in a ``.pt``/``.pth`` (a dict of tensors or numeric numpy arrays), ``.npz`` or
    ``.safetensors`` file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = _suffix(path)
    try:
        if suffix in (".pt", ".pth"):
            data = _load_pt(path)
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a dict of tensors (torch.save({{'tokens': ..., "
                                 f"'cls_attn': ...}})), got {type(data).__name__}")
            return {str(k): _as_tensor(path, k, v) for k, v in data.items()}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: _as_tensor(path, k, np.array(data[k])) for k in data.files}
        from safetensors.torch import load_file

        return load_file(str(path))
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(_unreadable(path, suffix, err)) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, zipfile.BadZipFile,
            KeyError, AttributeError, ImportError, TypeError) as err:
        raise ValueError(_unreadable(path, suffix, err)) from None
    except Exception as err:  # safetensors raises its own SafetensorError
        if type(err).__name__ != "SafetensorError":
            raise
        raise ValueError(_unreadable(path, suffix, err)) from None


def _unreadable(path: Path, suffix: str, err: BaseException) -> str:
    writer = {".pt": "torch.save", ".pth": "torch.save", ".npz": "numpy.savez",
              ".safetensors": "safetensors.torch.save_file"}[suffix]
    text = str(err)
    if "WeightsUnpickler error:" in text:  # keep torch's reason, not its advice on weights_only
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:300] + " ..."
    return (f"{path}: cannot read this {suffix} file ({type(err).__name__}: {text}); expected a "
            f"file written by {writer} holding named tensors")


def load_video(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens`` [F, N, D] and ``cls_attn`` [F, N] from a token file."""
    data = load_tensors(path)
    missing = [k for k in ("tokens", "cls_attn") if k not in data]
    if missing:
        raise ValueError(f"{path}: missing {missing}; expected tensors named 'tokens' [F, N, D] "
                         f"and 'cls_attn' [F, N], found {sorted(data)}")
    return data["tokens"], data["cls_attn"]


def check_output_path(path: str | Path) -> Path:
    """``path`` as a Path if a result can be written there (known suffix, existing folder);
    ValueError/FileNotFoundError otherwise. Call it before the work that produces the result."""
    path = Path(path)
    _suffix(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {parent} does not exist; expected an "
                                "existing folder for the output file")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a file name ending in one of "
                         f"{list(SUFFIXES)}")
    existed = path.exists()
    try:  # the folder exists, but may still not take a new file (read-only, /proc, ...)
        with open(path, "ab"):
            pass
    except OSError as err:
        raise ValueError(_unwritable(path, err)) from None
    if not existed:
        path.unlink()
    return path


def _unwritable(path: Path, err: OSError) -> str:
    return (f"cannot write the output file {path}: {err.strerror or err}; expected a path in a "
            "folder where a new file can be created")


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to ``.pt``/``.pth``, ``.npz`` or ``.safetensors`` (by suffix)."""
    path = check_output_path(path)
    try:
        _write(path, tensors)
    except OSError as err:
        raise ValueError(_unwritable(path, err)) from None


def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    suffix = path.suffix.lower()
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if suffix in (".pt", ".pth"):
        torch.save(tensors, path)
    elif suffix == ".npz":
        # numpy has no bfloat16: store it as float32
        np.savez(path, **{k: (v.float() if v.dtype == torch.bfloat16 else v).numpy()
                          for k, v in tensors.items()})
    else:
        from safetensors.torch import save_file

        save_file(tensors, str(path))
