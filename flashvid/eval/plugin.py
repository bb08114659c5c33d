"""The lmms-eval plugin: which FlashVID models exist and the entry point that registers them.

lmms-eval (>= 0.7) loads the Python entry-point group ``lmms_eval.models`` when
``lmms_eval.models`` is imported; flashvid's ``setup.cfg`` points it at :func:`manifests`, which
returns one ``ModelManifest`` per row of :data:`FAMILIES` that both sides support. Each
FlashVID model is a subclass of lmms-eval's own transformers-based model class (simple and,
where lmms-eval has one, chat), built by :mod:`flashvid.eval.models`.

To wire a model family that ``flashvid.apply`` learns to patch (a new entry in
``flashvid.integrations.REGISTRY``): add a :class:`Family` row naming the lmms-eval model that
loads it; nothing else changes. A row whose transformers class is not in the registry yet, or
whose lmms-eval module is missing from the installed lmms-eval, is simply not registered.

This module imports neither lmms-eval's models nor transformers (it runs while
``lmms_eval.models`` is being imported).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

GROUP = "lmms_eval.models"


@dataclass(frozen=True)
class Family:
    """One FlashVID model for lmms-eval.

    Attributes:
        name: the model name for ``--model`` (``flashvid_<base>``).
        base: lmms-eval's own model name; tasks' ``lmms_eval_specific_kwargs`` (prompts) are
            looked up under it by ``flashvid eval``.
        simple: lmms-eval's simple model class (``module.Class``), or None.
        chat: lmms-eval's chat model class, or None.
        frames_arg: the base class's argument (and attribute) holding the frames per video.
        model_classes: the transformers classes this lmms-eval model loads that FlashVID
            supports; the first one's registry preset is the default configuration.
    """

    name: str
    base: str
    simple: str | None
    chat: str | None
    frames_arg: str
    model_classes: tuple[str, ...]

    def class_name(self, kind: str) -> str:
        """The plugin class name for ``kind`` ("simple" or "chat")."""
        return f"FlashVID_{self.base}" + ("_chat" if kind == "chat" else "")

    def base_path(self, kind: str) -> str | None:
        return self.simple if kind == "simple" else self.chat


_SIMPLE, _CHAT = "lmms_eval.models.simple", "lmms_eval.models.chat"
FAMILIES: tuple[Family, ...] = (
    # llava_hf only as the simple model: it samples max_frames_num frames itself (lmms-eval's
    # chat llava_hf hands video files to the processor and ignores the frame count)
    Family("flashvid_llava_hf", "llava_hf", f"{_SIMPLE}.llava_hf.LlavaHf", None,
           "max_frames_num", ("LlavaOnevisionForConditionalGeneration",)),
    Family("flashvid_qwen2_5_vl", "qwen2_5_vl", f"{_SIMPLE}.qwen2_5_vl.Qwen2_5_VL",
           f"{_CHAT}.qwen2_5_vl.Qwen2_5_VL", "max_num_frames",
           ("Qwen2_5_VLForConditionalGeneration",)),
    # lmms-eval's qwen3_vl also loads Qwen3-VL-MoE (names with "A<n>B") and Qwen3.5 checkpoints:
    # they work as soon as flashvid.apply supports their classes
    Family("flashvid_qwen3_vl", "qwen3_vl", f"{_SIMPLE}.qwen3_vl.Qwen3_VL",
           f"{_CHAT}.qwen3_vl.Qwen3_VL", "max_num_frames", ("Qwen3VLForConditionalGeneration",)),
    Family("flashvid_qwen3_5", "qwen3_5", f"{_SIMPLE}.qwen3_5.Qwen3_5",
           f"{_CHAT}.qwen3_5.Qwen3_5", "max_num_frames", ("Qwen3_5ForConditionalGeneration",)),
)
BY_NAME = {f.name: f for f in FAMILIES}
BY_CLASS = {f.class_name(kind): (f, kind) for f in FAMILIES for kind in ("simple", "chat")
            if f.base_path(kind)}


def family(name: str) -> Family:
    """The :class:`Family` of a plugin model name (``flashvid_qwen2_5_vl``) or of lmms-eval's
    base name (``qwen2_5_vl``). ValueError listing the names otherwise."""
    if name in BY_NAME:
        return BY_NAME[name]
    for f in FAMILIES:
        if f.base == name:
            return f
    raise ValueError(f"unknown FlashVID lmms-eval model {name!r}; expected one of "
                     f"{[f.name for f in FAMILIES]} (or lmms-eval's names "
                     f"{[f.base for f in FAMILIES]})")


def flashvid_supports(f: Family) -> bool:
    """True when ``flashvid.apply`` patches the family's (first) transformers class."""
    from ..integrations import REGISTRY

    return f.model_classes[0] in REGISTRY


def family_preset(f: Family) -> str:
    """The registry preset (a ``FlashVIDConfig`` classmethod name) of the family's class."""
    from ..integrations import REGISTRY

    return REGISTRY[f.model_classes[0]][2]


def lmms_eval_has(path: str | None) -> bool:
    """True when the installed lmms-eval has the module of class path ``path``, checked on disk
    (no import: this runs while ``lmms_eval.models`` itself is being imported)."""
    if path is None:
        return False
    spec = importlib.util.find_spec("lmms_eval")
    if spec is None or not spec.submodule_search_locations:
        return False
    module = path.rsplit(".", 1)[0].split(".")[1:]  # drop "lmms_eval" and the class name
    root = Path(next(iter(spec.submodule_search_locations)))
    return root.joinpath(*module[:-1], module[-1] + ".py").is_file()


def available() -> list[Family]:
    """The families registered in this environment: supported by flashvid.apply and present in
    the installed lmms-eval."""
    return [f for f in FAMILIES if flashvid_supports(f) and lmms_eval_has(f.simple or f.chat)]


def manifests() -> list:
    """The ``lmms_eval.models`` entry point: one ``ModelManifest`` per available family."""
    from lmms_eval.models.registry_v2 import ModelManifest

    out = []
    for f in available():
        paths = {kind: f"flashvid.eval.models.{f.class_name(kind)}"
                 for kind in ("simple", "chat") if lmms_eval_has(f.base_path(kind))}
        out.append(ModelManifest(model_id=f.name, simple_class_path=paths.get("simple"),
                                 chat_class_path=paths.get("chat")))
    return out


__all__ = ["FAMILIES", "Family", "available", "family", "family_preset", "flashvid_supports",
           "lmms_eval_has", "manifests"]
