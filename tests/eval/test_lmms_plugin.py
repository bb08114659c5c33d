"""The lmms-eval plugin: entry-point registration, classes built on lmms-eval's own, model_args
checked before the weights load, failures that lmms-eval would hide. Needs lmms-eval."""

import pytest

from flashvid.eval.args import NAMES
from flashvid.eval.models import FlashVIDModel, accepted_parameters
from flashvid.eval.plugin import FAMILIES, available, lmms_eval_has
from flashvid.integrations import REGISTRY


def _registered():
    from lmms_eval.models import list_available_models

    return set(list_available_models())


def test_entry_point_registers_the_supported_families():
    names = _registered()
    for fam in FAMILIES:
        wanted = fam.model_classes[0] in REGISTRY and lmms_eval_has(fam.simple or fam.chat)
        assert (fam.name in names) == wanted, fam.name
    assert {"flashvid_llava_hf", "flashvid_qwen2_5_vl", "flashvid_qwen3_vl"} <= names
    assert {"llava_hf", "qwen2_5_vl", "qwen3_vl"} <= names  # lmms-eval's own are untouched


@pytest.mark.parametrize("fam", available(), ids=lambda f: f.name)
def test_classes_are_lmms_eval_subclasses(fam):
    import importlib

    from lmms_eval.api.model import lmms
    from lmms_eval.models import get_model

    for kind, force_simple in (("chat", False), ("simple", True)):
        path = fam.base_path(kind)
        if path is None:
            continue
        module, name = path.rsplit(".", 1)
        base = getattr(importlib.import_module(module), name)
        cls = get_model(fam.name, force_simple=force_simple)
        assert issubclass(cls, FlashVIDModel) and issubclass(cls, base) and issubclass(cls, lmms)
        assert cls.__mro__[1:3] == (FlashVIDModel, base)
        assert cls.is_simple is base.is_simple
        accepted = accepted_parameters(base)
        assert {"pretrained", fam.frames_arg} <= accepted
        assert not accepted & set(NAMES), "a FlashVID name shadows an lmms-eval argument"


@pytest.mark.parametrize("args, named", [
    ("pretrained=/no/such/model,retension=0.1", "'retension'"),
    ("pretrained=/no/such/model,retention=2", "retention=2"),
    ("pretrained=/no/such/model,pruning_layer=-1", "pruning_layer=-1"),
    ("pretrained=/no/such/model,flashvid=maybe", "flashvid='maybe'"),
])
def test_bad_model_args_fail_before_loading(args, named):
    # the checkpoint path does not exist: the error comes before any load is tried
    from lmms_eval.models import get_model

    with pytest.raises(ValueError) as err:
        get_model("flashvid_qwen2_5_vl").create_from_arg_string(args, {"device": "cpu"})
    assert named in str(err.value)


def test_a_pruning_layer_past_the_model_fails_at_start(checkpoint):
    from lmms_eval.models import get_model

    path = checkpoint("qwen2_5_vl")
    with pytest.raises(ValueError) as err:
        get_model("flashvid_qwen2_5_vl").create_from_arg_string(
            f"pretrained={path},device=cpu,device_map=cpu")  # the preset's K = 20, 4 layers here
    text = str(err.value)
    assert "pruning_layer=20" in text and "pruning_layer=none" in text
    assert "flashvid_qwen2_5_vl" in text


def test_flashvid_off_is_lmms_eval_s_model(checkpoint):
    from lmms_eval.models import get_model

    lm = get_model("flashvid_qwen2_5_vl").create_from_arg_string(
        f"pretrained={checkpoint('qwen2_5_vl')},device=cpu,device_map=cpu,flashvid=off,pruning_layer=2,"
        "max_num_frames=6")
    assert lm.flashvid_handle is None and lm.flashvid_meter.installed
    assert lm.flashvid_frames == 6 and lm.max_num_frames == 6
    assert lm.flashvid_state()["mode"] == "vanilla"
    lm.flashvid_configure(enabled=True, retention=0.3)  # switched on later: applied then
    assert lm.flashvid_handle.enabled and lm.flashvid_handle.config.retention_ratio == 0.3
    assert lm.flashvid_state()["mode"] == "flashvid"
    # the meter stays outermost, above FlashVID's patch
    assert lm.model.__dict__["generate"].inner.handle is lm.flashvid_handle


def test_errors_lmms_eval_would_swallow_are_raised(checkpoint, in_data):
    """lmms-eval's llava_hf catches generate() errors and scores an empty answer; the plugin
    raises them instead."""
    import taskdata
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    lm = get_model("flashvid_llava_hf").create_from_arg_string(
        f"pretrained={checkpoint('llava_onevision')},device=cpu,max_frames_num=2,"
        "pruning_layer=2")

    def broken(tokens, importance, config):
        raise RuntimeError("compressor failed on purpose")

    lm.flashvid_handle.compressor = broken
    manager = TaskManager("WARNING", include_path=str(taskdata.TASK_DIR), model_name="llava_hf")
    with pytest.raises(RuntimeError, match="compressor failed on purpose") as err:
        simple_evaluate(model=lm, tasks=[taskdata.TASK], limit=1, task_manager=manager,
                        bootstrap_iters=0, verbosity="ERROR")
    assert "would have scored an empty answer" in str(err.value)
