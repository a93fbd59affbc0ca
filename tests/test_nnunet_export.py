import json
from pathlib import Path

from samstudy import nnunet
from samstudy.io import read_json
from samstudy.splits import load_split


def test_export_uses_the_study_cases_and_folds(study):
    cfg, layout = study
    stamp = nnunet.export(layout, "phantom", 777)
    raw = Path(stamp["raw"])
    assert raw.name == "Dataset777_phantom"
    split = load_split(layout, "phantom")
    assert read_json(raw / "splits_final.json") == split["folds"]
    assert sorted(p.name[:-12] for p in (raw / "imagesTs").glob("*_0000.nii.gz")) == sorted(split["test"])
    trained = sorted(p.name[:-7] for p in (raw / "labelsTr").glob("*.nii.gz"))
    assert trained == sorted(split["folds"][0]["train"] + split["folds"][0]["val"])
    meta = json.loads((raw / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    assert meta["channel_names"] == {"0": "CT"}
