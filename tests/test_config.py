import pytest

from samstudy import config as samstudy_config
from samstudy import study
from samstudy.config import ConfigError


def test_defaults_filled_and_default_study_valid():
    cfg = study.load("config/config.yaml")
    assert cfg["datasets"][0]["role"] == "train_test"
    assert cfg["models"]["litemedsam"]["checkpoint"] is None
    assert set(cfg) >= {
        "results_dir",
        "cache_dir",
        "seed",
        "splits",
        "preprocess",
        "models",
        "prompts",
        "methods",
        "train",
        "nnunet",
        "evaluate",
        "report",
    }


def test_minimal_config_gets_every_section():
    cfg = samstudy_config.validate({"datasets": [{"name": "a", "format": "synthetic", "modality": "CT"}]})
    assert cfg["splits"]["test_fraction"] == 0.25
    assert cfg["train"]["lr"] > 0
    assert cfg["methods"]["zeroshot"]["adaptation"] == "none"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"datasets": [{"name": "a", "format": "synthetic", "modality": "CT"}], "typo_key": 1}, "schema"),
        ({"datasets": [{"name": "a", "format": "tiff", "modality": "CT"}]}, "schema"),
        ({"datasets": [{"name": "a", "format": "msd", "modality": "CT"}]}, "needs a 'path'"),
        (
            {"datasets": [{"name": "a", "format": "synthetic", "modality": "CT"}], "methods": {"m": {"model": "nope"}}},
            "not defined",
        ),
        (
            {
                "datasets": [{"name": "a", "format": "synthetic", "modality": "CT"}],
                "models": {"b": {"type": "sam_vit_b"}},
                "methods": {"m": {"model": "b"}},  # (the default methods name the default model, litemedsam)
            },
            "needs a 'checkpoint'",
        ),
        (
            {
                "datasets": [
                    {"name": "a", "format": "synthetic", "modality": "CT"},
                    {"name": "a", "format": "synthetic", "modality": "CT"},
                ]
            },
            "duplicate",
        ),
    ],
)
def test_bad_config_is_a_clear_error(bad, message):
    with pytest.raises(ConfigError, match=message):
        study.validate(bad)  # the config layer's checks and the study table's, as the workflow runs them


def test_as_param_is_canonical():
    assert samstudy_config.as_param({"b": 1, "a": [1, 2]}) == samstudy_config.as_param({"a": [1, 2], "b": 1})
