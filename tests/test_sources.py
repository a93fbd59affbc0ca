"""Raw data are inputs: every file a dataset reads is listed from the config alone (samstudy.readers), a
missing dataset path is a config error, phantoms hold only the cases their settings make, a moved results
folder still reads its files, and a killed run's lock is told apart from a running one (samstudy.lock)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from samstudy import config as samstudy_config
from samstudy import synthetic
from samstudy.cases import load_dataset_table, read_case
from samstudy.ingest import ingest_dataset
from samstudy.lock import BUSY, active_runs, recover
from samstudy.paths import Layout
from samstudy.readers import dataset_files, fingerprint
from tests.test_ingest import _cfg_dataset, _dicom_series, _write

SETTINGS = {"n_patients": 3, "scans_per_patient": 1, "shape": [16, 16, 8]}


def _nnunet(tmp_path, **kw):
    root = synthetic.write_dataset(tmp_path / "user", seed=1, settings=SETTINGS)
    ds = {"name": "user", "format": "nnunet", "path": str(root), "modality": "CT", **kw}
    return root, samstudy_config.validate({"datasets": [ds]})["datasets"][0]


def test_nnunet_listing_is_what_ingest_reads_and_its_fingerprint_sees_every_change(tmp_path):
    root, ds = _nnunet(tmp_path)
    (root / "imagesTs").mkdir()
    (root / "imagesTs" / "x_0000.nii.gz").write_bytes(b"not read by ingest")
    (root / "notes.txt").write_text("not read either")
    files = dataset_files(ds)
    expected = [root / "dataset.json"]
    expected += [root / "imagesTr" / f"pat{p:02d}_s0_0000.nii.gz" for p in range(3)]
    expected += [root / "labelsTr" / f"pat{p:02d}_s0.nii.gz" for p in range(3)]
    assert files == sorted(str(p) for p in expected)
    # the manifest's files are exactly these (plus dataset.json)
    manifest = ingest_dataset(ds, Layout(str(tmp_path / "results")), seed=0)
    read = {f for images in manifest["images"] for f in images} | set(manifest["label"])
    assert read | {str(root / "dataset.json")} == set(files)

    before = fingerprint(files)
    label = root / "labelsTr" / "pat01_s0.nii.gz"
    stat = label.stat()
    # a corrected label copied in with an older time (cp -p, rsync -t): Snakemake's newer-than test misses
    # it; the fingerprint does not
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    arr[0] = 0
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(sitk.ReadImage(str(label)))
    sitk.WriteImage(img, str(label))
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
    assert dataset_files(ds) == files and fingerprint(files) != before
    # an added case and a removed one change the listing itself
    shutil.copy(root / "imagesTr" / "pat00_s0_0000.nii.gz", root / "imagesTr" / "pat09_s0_0000.nii.gz")
    shutil.copy(root / "labelsTr" / "pat00_s0.nii.gz", root / "labelsTr" / "pat09_s0.nii.gz")
    assert str(root / "labelsTr" / "pat09_s0.nii.gz") in dataset_files(ds)
    (root / "labelsTr" / "pat02_s0.nii.gz").unlink()
    assert str(root / "labelsTr" / "pat02_s0.nii.gz") not in dataset_files(ds)


def test_listing_of_the_other_formats_and_the_patient_csv(tmp_path):
    # nifti patterns: an image without its label lists the image; the label appears once it is added
    for case in ("a", "b"):
        _write(tmp_path / "nii" / "images" / f"{case}.nii.gz", np.ones((3, 4, 4), np.float32))
    _write(tmp_path / "nii" / "labels" / "a.nii.gz", np.ones((3, 4, 4), np.uint8))
    (tmp_path / "nii" / "ids.csv").write_text("case_id,patient_id\na,p1\nb,p2\n")
    ds = _cfg_dataset(tmp_path / "nii", "nifti", patient_id={"csv": "ids.csv"})
    names = [Path(f).relative_to(tmp_path / "nii").as_posix() for f in dataset_files(ds)]
    assert names == ["ids.csv", "images/a.nii.gz", "images/b.nii.gz", "labels/a.nii.gz"]
    # dicom: every file of each series folder
    _dicom_series(tmp_path / "dcm" / "images" / "c1", np.zeros((3, 5, 5), np.int16))
    _write(tmp_path / "dcm" / "labels" / "c1.nii.gz", np.zeros((3, 5, 5), np.uint8))
    ds = _cfg_dataset(tmp_path / "dcm", "dicom")
    names = [Path(f).relative_to(tmp_path / "dcm").as_posix() for f in dataset_files(ds)]
    assert names == [f"images/c1/slice00{z}.dcm" for z in range(3)] + ["labels/c1.nii.gz"]
    # msd: the files dataset.json names
    (tmp_path / "msd").mkdir()
    _write(tmp_path / "msd" / "imagesTr" / "x.nii.gz", np.ones((3, 4, 4), np.float32))
    _write(tmp_path / "msd" / "labelsTr" / "x.nii.gz", np.ones((3, 4, 4), np.uint8))
    meta = {"modality": {"0": "MR"}, "labels": {"0": "background", "1": "t"}}
    meta["training"] = [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]
    (tmp_path / "msd" / "dataset.json").write_text(json.dumps(meta))
    ds = samstudy_config.validate(
        {"datasets": [{"name": "m", "format": "msd", "path": str(tmp_path / "msd"), "modality": "MR"}]}
    )["datasets"][0]
    names = [Path(f).relative_to(tmp_path / "msd").as_posix() for f in dataset_files(ds)]
    assert names == ["dataset.json", "imagesTr/x.nii.gz", "labelsTr/x.nii.gz"]
    # a broken dataset.json lists itself (fixing it reruns ingest, which names the problem), a missing one nothing
    (tmp_path / "msd" / "dataset.json").write_text("{broken")
    assert dataset_files(ds) == [str(tmp_path / "msd" / "dataset.json")]
    (tmp_path / "msd" / "dataset.json").unlink()
    assert dataset_files(ds) == []
    # built-in datasets are written by ingest from the config: no raw inputs
    default = samstudy_config.load("config/config.yaml")
    assert [dataset_files(d) for d in default["datasets"]] == [[], [], []]


def test_a_missing_dataset_path_is_a_config_error_before_any_job(tmp_path):
    cfg = samstudy_config.validate(
        {"datasets": [{"name": "d", "format": "nnunet", "path": str(tmp_path / "nowhere"), "modality": "CT"}]}
    )
    with pytest.raises(samstudy_config.ConfigError, match=r"datasets\.d\.path: .*nowhere does not exist"):
        samstudy_config.check_paths(cfg)
    # the Snakefile checks it while building the DAG: a dry run fails with the message, no job runs
    (tmp_path / "my.yaml").write_text(json.dumps({"datasets": cfg["datasets"], "nnunet": {"enabled": False}}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(tmp_path / "my.yaml")],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "nowhere does not exist" in proc.stdout + proc.stderr
    # the built-in datasets are written at their path: theirs need not exist yet
    samstudy_config.check_paths(samstudy_config.load("config/config.yaml"))


@pytest.mark.parametrize("kind", ["ct3d", "png2d"])
def test_phantoms_drop_the_cases_their_settings_no_longer_make(tmp_path, kind):
    settings = {"kind": kind, "n_patients": 3, **({"shape": [16, 16, 4]} if kind == "ct3d" else {})}
    synthetic.write_dataset(tmp_path, 1, settings)
    before = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    synthetic.write_dataset(tmp_path, 1, {**settings, "n_patients": 2})
    after = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert [n for n in before if "pat02" in n] and not [n for n in after if "pat02" in n]
    assert after == [n for n in before if "pat02" not in n]


def test_a_moved_results_folder_still_reads_its_builtin_data(tmp_path):
    cfg = samstudy_config.validate(
        {"datasets": [{"name": "ph", "format": "synthetic", "modality": "CT", "synthetic": SETTINGS}]}
    )
    first = Layout(str(tmp_path / "results"))
    ingest_dataset(cfg["datasets"][0], first, seed=0)
    stored = json.loads(Path(first.ingest_info("ph")).read_text())
    assert stored["path"] == "raw/ph"  # relative to results_dir
    (tmp_path / "results").rename(tmp_path / "moved")
    moved = Layout(str(tmp_path / "moved"))
    table, info = load_dataset_table(moved, "ph")
    assert info["path"] == str(tmp_path / "moved" / "raw" / "ph")
    assert all(Path(f).is_file() and "moved" in f for f in table["images"].iloc[0] + [table["label"].iloc[0]])
    image, label = read_case(table.iloc[0], info)
    assert image.GetSize() == (16, 16, 8) and label.shape == (8, 16, 16)


def test_a_killed_runs_lock_is_cleared_but_a_running_study_is_not_disturbed(tmp_path, capsys):
    # a process that looks like Snakemake working in tmp_path
    fake = tmp_path / "bin" / "snakemake"
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(fake), "--cores", "2"], cwd=tmp_path)
    try:
        deadline = time.time() + 20
        while not active_runs(tmp_path) and time.time() < deadline:
            time.sleep(0.1)
        assert [pid for pid, _ in active_runs(tmp_path)] == [proc.pid]
        assert active_runs(tmp_path / "bin") == []  # another directory is not this one
        (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
        (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x")
        assert recover(tmp_path, []) == BUSY
        assert f"pid {proc.pid}" in capsys.readouterr().err
        assert (tmp_path / ".snakemake" / "locks" / "0.input.lock").exists()  # left alone
    finally:
        proc.kill()
        proc.wait()
    assert active_runs(tmp_path) == []
