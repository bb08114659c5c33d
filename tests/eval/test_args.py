"""FlashVID model_args: parsing, the split from lmms-eval's arguments, messages naming the
argument. Pure Python: runs in every environment."""

import pytest

from flashvid import FlashVIDConfig
from flashvid.eval.args import NAMES, parse_settings, split_model_args

BASE = frozenset({"pretrained", "device", "device_map", "batch_size", "max_num_frames"})


def test_split_keeps_each_side():
    ours, rest = split_model_args(
        {"pretrained": "/m", "device": "cpu", "retention": 0.2, "pruning_layer": "none",
         "alpha": 0.5}, BASE, model="flashvid_x")
    assert ours == {"retention": 0.2, "pruning_layer": "none", "alpha": 0.5}
    assert rest == {"pretrained": "/m", "device": "cpu"}


def test_unknown_argument_is_named():
    with pytest.raises(ValueError) as err:
        split_model_args({"pretrained": "/m", "retension": 0.1}, BASE, model="flashvid_x")
    text = str(err.value)
    assert "'retension'" in text and "flashvid_x" in text
    assert "max_num_frames" in text and "retention" in text  # both sets are listed


def test_values_as_lmms_eval_parses_them():
    # lmms-eval's handle_arg_string gives bools, ints, floats or strings
    s = parse_settings({"retention": 0.15, "llm_retention": 1, "pruning_layer": 2,
                        "exact_count": True, "backend": "torch", "dedupe": "on",
                        "selection": "adts_v1"})
    assert s.enabled and s.llm_stage
    assert s.overrides == {"retention_ratio": 0.15, "llm_retention_ratio": 1.0,
                           "pruning_layer": 2, "exact_count": True, "backend": "torch",
                           "dedupe": True, "selection": "adts_v1"}
    cfg = s.config("qwen2_5_vl")
    assert cfg == FlashVIDConfig.qwen2_5_vl(retention_ratio=0.15, llm_retention_ratio=1.0,
                                            pruning_layer=2, exact_count=True, backend="torch",
                                            dedupe=True)


@pytest.mark.parametrize("value, enabled", [("off", False), (False, False), (0, False),
                                            ("on", True), (True, True), ("true", True)])
def test_switch(value, enabled):
    assert parse_settings({"flashvid": value}).enabled is enabled


@pytest.mark.parametrize("value", ["none", "off", False, "None"])
def test_pruning_layer_none_switches_the_stage_off(value):
    s = parse_settings({"pruning_layer": value})
    assert not s.llm_stage and "pruning_layer" not in s.overrides
    assert s.apply_kwargs()["pruning_layer"] is None


def test_preset_and_variant():
    s = parse_settings({"preset": "qwen3-vl", "variant": "llava_video", "retention": 0.3})
    kwargs = s.apply_kwargs()
    assert kwargs["config"] == FlashVIDConfig.qwen3_vl()
    assert kwargs["variant"] == "llava_video" and kwargs["retention_ratio"] == 0.3
    # the preset given wins over the family's
    assert s.config("llava_onevision") == FlashVIDConfig.qwen3_vl(retention_ratio=0.3)


@pytest.mark.parametrize("args, named", [
    ({"retention": 1.5}, "retention=1.5"),
    ({"retention": 0}, "retention=0"),
    ({"retention": "lots"}, "retention='lots'"),
    ({"llm_retention": -0.1}, "llm_retention=-0.1"),
    ({"pruning_layer": 2.5}, "pruning_layer=2.5"),
    ({"pruning_layer": 0}, "pruning_layer=0"),
    ({"backend": "cuda"}, "backend=cuda"),
    ({"selection": "best"}, "selection=best"),
    ({"exact_count": "maybe"}, "exact_count='maybe'"),
    ({"flashvid": "sometimes"}, "flashvid='sometimes'"),
    ({"preset": "llava_next"}, "preset='llava_next'"),
    ({"variant": "grid"}, "variant='grid'"),
    ({"retention": True}, "retention=True"),
])
def test_bad_values_name_the_argument(args, named):
    with pytest.raises(ValueError) as err:
        parse_settings(args)
    assert named in str(err.value)


def test_a_setting_given_twice():
    with pytest.raises(ValueError, match="retention and retention_ratio"):
        parse_settings({"retention": 0.1, "retention_ratio": 0.2})


def test_every_config_field_has_a_name():
    fields = set(FlashVIDConfig.__dataclass_fields__)
    assert fields <= set(NAMES)
