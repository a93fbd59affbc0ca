"""The nnU-Net v2 baseline, run through nnunetv2 itself on the study's cases and folds.

export: the study's cases to an nnU-Net raw dataset (train+val in imagesTr, test in imagesTs, study
label values) plus splits_final.json = the study's folds. plan: nnU-Net's fingerprint, planning and
preprocessing (with dataset integrity verification). train: nnU-Net's trainer; the `quick` schedule sets
epochs/iterations and caps the network width before initialize() (CPU demos), `full` keeps nnU-Net's
defaults; one model per study fold, followed by nnU-Net's validation of that fold. A killed training
resumes from checkpoint_latest.pth. predict: nnU-Net's predictor on the test cases with every trained fold
(averaged), written into the study's predictions/ layout (geometry kept by nnU-Net). select_best /
predict_best: nnU-Net's find_best_configuration (configurations and ensembles of two compared on the
cross-validation, postprocessing determined) and the selected model's test predictions (run nnunet_best).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samstudy.ingest import is_raster, load_dataset_table, read_case, read_image
from samstudy.io import atomic_path, read_json, sha256_json, write_json
from samstudy.models import resolve_device
from samstudy.paths import Layout, nnunet_run_name
from samstudy.splits import cases_in, load_split

log = logging.getLogger(__name__)

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"


def dataset_folder_name(dataset_id: int, dataset: str) -> str:
    return f"Dataset{dataset_id:03d}_{dataset}"


def setup_environment(layout: Layout, threads: int | None = None) -> dict[str, str]:
    """nnU-Net's folders and process counts; must run before nnunetv2 is imported."""
    root = Path(layout.nnunet_root()).resolve()
    env = {
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_compile": "f",
    }
    cpus = threads or len(os.sched_getaffinity(0))
    env.setdefault("nnUNet_def_n_proc", str(max(1, min(cpus, 8))))
    # nnU-Net's default 8-12 augmentation workers thrash a small CPU (train() lowers this to 0 there).
    env.setdefault("nnUNet_n_proc_DA", str(max(1, min(cpus - 1, 12))))
    for k, v in env.items():
        if k in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA") and k in os.environ:
            continue  # the user's (e.g. cluster profile's) choice wins
        os.environ[k] = v
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[k]).mkdir(parents=True, exist_ok=True)
    return env


def _channel_names(info: dict, modality: str) -> dict[str, str]:
    # nnU-Net picks its normalisation from the channel name: "CT" -> CT normalisation, else z-score.
    channels = info.get("channels") or ["image"]
    return {str(i): ("CT" if modality == "CT" else name) for i, name in enumerate(channels)}


def _link(src: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(Path(src).resolve(), dst)


def _header_dimension(path: str) -> int:
    """Image dimensionality from the file header alone (no voxel data read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetDimension()


def _channels_2d(path: str, info: dict) -> list[sitk.Image]:
    """A 2D image file's channels as scalar images; a grey image in a colour dataset is repeated 3 times."""
    spacing = (info.get("read") or {}).get("spacing")
    img = read_image(path, spacing)
    if img.GetNumberOfComponentsPerPixel() > 1:
        return [sitk.VectorIndexSelectionCast(img, c) for c in range(img.GetNumberOfComponentsPerPixel())]
    return [img] * len(info.get("channels") or [None])


def export(layout: Layout, dataset: str, dataset_id: int) -> dict:
    """Write the nnU-Net raw dataset and splits_final.json for one study dataset."""
    env = setup_environment(layout)
    table, info = load_dataset_table(layout, dataset)
    split = load_split(layout, dataset)
    raw = Path(env["nnUNet_raw"]) / dataset_folder_name(dataset_id, dataset)
    if raw.exists():
        shutil.rmtree(raw)
    test = set(cases_in(split, "test"))
    train = sorted({c for fold in split["folds"] for c in fold["train"] + fold["val"]})  # every fold's cases
    rows = table.set_index("case_id")
    for case in sorted(set(train) | test):
        row = rows.loc[case].to_dict()
        folder = "imagesTs" if case in test else "imagesTr"
        images = list(row["images"])
        first = images[0]
        if is_raster(first):
            # 2D image files: one 2D NIfTI per channel with the configured spacing (nnU-Net reads 2D NIfTI
            # and writes its predictions in the same 2D geometry); colour datasets get R, G, B.
            for c, channel in enumerate(_channels_2d(first, info)):
                with atomic_path(raw / folder / f"{case}_{c:04d}.nii.gz") as tmp:
                    sitk.WriteImage(channel, str(tmp), useCompression=True)
        elif len(images) == 1 and (Path(first).is_dir() or not first.endswith((".nii", ".nii.gz"))
                                   or _header_dimension(first) == 4):  # fmt: skip
            # DICOM series, other formats and 4D multi-channel files become one NIfTI per channel
            img = read_image(first)
            channels = [img[:, :, :, c] for c in range(img.GetSize()[3])] if img.GetDimension() == 4 else [img]
            for c, channel in enumerate(channels):
                with atomic_path(raw / folder / f"{case}_{c:04d}.nii.gz") as tmp:
                    sitk.WriteImage(channel, str(tmp), useCompression=True)
        else:
            for c, path in enumerate(images):
                _link(path, raw / folder / f"{case}_{c:04d}.nii.gz")
        if case not in test:
            image, label = read_case(row, info)
            lab = sitk.GetImageFromArray(label.astype(np.uint8))
            lab.CopyInformation(image)
            with atomic_path(raw / "labelsTr" / f"{case}.nii.gz") as tmp:
                sitk.WriteImage(lab, str(tmp), useCompression=True)
    labels = {"background": 0, **{name: int(v) for v, name in info["labels"].items()}}
    write_json(
        raw / "dataset.json",
        {
            "channel_names": _channel_names(info, rows["modality"].iloc[0]),
            "labels": labels,
            "numTraining": len(train),
            "file_ending": ".nii.gz",
            "name": dataset,
        },
    )
    write_json(raw / "splits_final.json", split["folds"])
    stamp = {"dataset": dataset, "dataset_id": dataset_id, "raw": str(raw), "train": train, "test": sorted(test)}
    write_json(layout.nnunet_export_done(dataset), stamp)
    return stamp


def plan(layout: Layout, dataset: str, dataset_id: int, configurations: list[str], schedule: str) -> dict:
    """nnU-Net fingerprint (+ integrity check), planning and preprocessing; installs the study's folds."""
    env = setup_environment(layout)
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )

    class QuickFingerprint(DatasetFingerprintExtractor):
        # nnU-Net samples 1e8 foreground voxels for its intensity statistics whatever the data size;
        # the quick schedule samples 1e6 (small demo data has fewer anyway).
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e6

    n_proc = int(os.environ["nnUNet_def_n_proc"])
    extractor = QuickFingerprint if schedule == "quick" else DatasetFingerprintExtractor
    extract_fingerprint_dataset(dataset_id, extractor, n_proc, check_dataset_integrity=True, clean=True, verbose=False)
    plan_experiment_dataset(dataset_id)
    preprocess_dataset(dataset_id, PLANS, configurations, [n_proc], show_progress_bar=True)
    name = dataset_folder_name(dataset_id, dataset)
    pre = Path(env["nnUNet_preprocessed"]) / name
    shutil.copyfile(Path(env["nnUNet_raw"]) / name / "splits_final.json", pre / "splits_final.json")
    plans = read_json(pre / f"{PLANS}.json")
    stamp = {"dataset": dataset, "dataset_id": dataset_id, "configurations_planned": sorted(plans["configurations"])}
    write_json(layout.nnunet_plan_done(dataset), stamp)
    return stamp


def _cap_features(plans: dict, configuration: str, max_features: int) -> None:
    arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(int(f), max_features) for f in arch["features_per_stage"]]


def _planned(layout: Layout, dataset: str, dataset_id: int) -> tuple[Path, dict]:
    env = setup_environment(layout)
    pre = Path(env["nnUNet_preprocessed"]) / dataset_folder_name(dataset_id, dataset)
    return pre, read_json(pre / f"{PLANS}.json")


def train(
    layout: Layout, dataset: str, dataset_id: int, configuration: str, fold: int, settings: dict, seed: int
) -> dict:
    """Train one configuration on one study fold with nnU-Net's own trainer, then run nnU-Net's validation
    of that fold (its cross-validation predictions; with probabilities when the best configuration is to
    be selected, as ensembling needs them)."""
    if len(os.sched_getaffinity(0)) <= 2:
        os.environ.setdefault("nnUNet_n_proc_DA", "0")  # in-process augmentation: no thrash, bit-reproducible
    pre, plans = _planned(layout, dataset, dataset_id)
    stamp = {
        "dataset": dataset,
        "configuration": configuration,
        "fold": fold,
        "schedule": settings["schedule"],
        "converged": settings["schedule"] != "quick",
    }
    if configuration not in plans["configurations"]:
        log.warning("%s: nnU-Net did not plan %s for this dataset; nothing to train", dataset, configuration)
        stamp["planned"] = False
        write_json(layout.nnunet_train_done(dataset, configuration, fold), stamp)
        return stamp
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.manual_seed(seed)
    np.random.seed(seed)
    if torch.get_num_threads() > 2 and resolve_device(settings["device"]).type == "cpu":
        torch.set_num_threads(max(1, int(os.environ["nnUNet_def_n_proc"])))
    plans["continue_training"] = True  # our own resume logic below decides; this only keeps nnU-Net's logs
    quick = settings["schedule"] == "quick"
    if quick:
        _cap_features(plans, configuration, settings["quick"]["max_features"])
    trainer = nnUNetTrainer(
        plans=plans,
        configuration=configuration,
        fold=fold,
        dataset_json=read_json(pre / "dataset.json"),
        device=resolve_device(settings["device"]),
    )
    if quick:
        trainer.num_epochs = settings["quick"]["epochs"]
        trainer.num_iterations_per_epoch = settings["quick"]["iterations_per_epoch"]
        trainer.num_val_iterations_per_epoch = settings["quick"]["val_iterations_per_epoch"]
        trainer.save_every = 1  # a killed quick run resumes from its last epoch (nnU-Net saves every 50)
    out = Path(trainer.output_folder)
    final, latest = out / "checkpoint_final.pth", out / "checkpoint_latest.pth"
    # nnU-Net's folder is reused only by the same training run (same schedule, plans and seed); otherwise
    # a finished or half-done model from other settings would be picked up. The device and select_best do
    # not change the model: they never discard one (select_best only reruns the validation, with
    # probabilities).
    schedule = {k: settings[k] for k in ("schedule", "quick")}
    run_id = sha256_json({"settings": schedule, "seed": seed, "plans": plans})
    marker = out / "samstudy_run.json"
    if out.exists() and (not marker.is_file() or read_json(marker).get("run_id") != run_id):
        log.info("%s fold %d: settings changed since the last training; starting afresh", dataset, fold)
        shutil.rmtree(out)
        out.mkdir(parents=True)
    write_json(marker, {"run_id": run_id})
    if final.is_file():
        log.info("%s fold %d: training already finished (%s)", dataset, fold, final)
        trainer.load_checkpoint(str(final))
    else:
        if latest.is_file():
            log.info("%s fold %d: resuming from %s", dataset, fold, latest)
            trainer.load_checkpoint(str(latest))
        trainer.run_training()
    summary = out / "validation" / "summary.json"
    if not summary.is_file() or (settings.get("select_best") and not any((out / "validation").glob("*.npz"))):
        trainer.perform_actual_validation(save_probabilities=bool(settings.get("select_best")))
    stamp.update(
        {
            "planned": True,
            "model_folder": str(out.parent),
            "checkpoint": str(final),
            "validation_dice": read_json(summary)["foreground_mean"]["Dice"],
        }
    )
    write_json(layout.nnunet_train_done(dataset, configuration, fold), stamp)
    return stamp


def _predict_configuration(
    layout: Layout,
    dataset: str,
    configuration: str,
    folds: list[int],
    inputs: list[list[str]],
    out_dir: Path,
    settings: dict,
    probabilities: bool,
) -> None:
    """nnU-Net's predictor with one configuration's trained folds (it averages the folds). The cascade
    first predicts its 3d_lowres stage, whose segmentations it takes as input."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    previous = None
    if configuration == "3d_cascade_fullres":
        previous = out_dir.parent / f"{out_dir.name}.3d_lowres"
        _predict_configuration(layout, dataset, "3d_lowres", folds, inputs, previous, settings, False)
    stamp = read_json(layout.nnunet_train_done(dataset, configuration, folds[0]))
    device = resolve_device(settings["device"])
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=settings["schedule"] == "full",
        perform_everything_on_device=device.type == "cuda",
        device=device,
        allow_tqdm=True,
    )
    predictor.initialize_from_trained_model_folder(
        stamp["model_folder"], use_folds=tuple(folds), checkpoint_name="checkpoint_final.pth"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [str(out_dir / Path(files[0]).name[: -len("_0000.nii.gz")]) for files in inputs]
    with torch.inference_mode():
        predictor.predict_from_files_sequential(
            inputs,
            outputs,
            save_probabilities=probabilities,
            overwrite=True,
            folder_with_segs_from_prev_stage=str(previous) if previous else None,
        )


def _test_inputs(exported: dict) -> list[list[str]]:
    raw = Path(exported["raw"])
    return [
        sorted(str(p) for p in (raw / "imagesTs").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))
        for case in exported["test"]
    ]


def _move_predictions(layout: Layout, run: str, dataset: str, cases: list[str], folder: Path) -> list[str]:
    written = []
    Path(layout.prediction_dir(run, dataset)).mkdir(parents=True, exist_ok=True)
    for case in cases:
        dst = layout.prediction(run, dataset, case)
        os.replace(folder / f"{case}.nii.gz", dst)
        written.append(dst)
    return written


def predict(
    layout: Layout, dataset: str, dataset_id: int, configuration: str, folds: list[int], settings: dict
) -> list[str]:
    """Predict the study's test cases with a configuration's trained folds into predictions/nnunet_<cfg>/."""
    setup_environment(layout)
    stamps = [read_json(layout.nnunet_train_done(dataset, configuration, f)) for f in folds]
    exported = read_json(layout.nnunet_export_done(dataset))
    run = nnunet_run_name(configuration)
    if not all(st["planned"] for st in stamps):
        reason = f"nnU-Net did not plan {configuration} for {dataset}: no model, no predictions"
        write_json(layout.prediction_not_planned(run, dataset), {"reason": reason})
        log.warning(reason)
        return []
    with tempfile.TemporaryDirectory(dir=layout.nnunet_root()) as tmp:
        out = Path(tmp, configuration)
        _predict_configuration(layout, dataset, configuration, folds, _test_inputs(exported), out, settings, False)
        return _move_predictions(layout, run, dataset, exported["test"], out)


def select_best(layout: Layout, dataset: str, dataset_id: int, configurations: list[str], folds: list[int]) -> dict:
    """nnU-Net's find_best_configuration over the trained (planned) configurations and folds: single
    configurations and ensembles of two compared on the cross-validation, postprocessing determined."""
    setup_environment(layout)
    from nnunetv2.evaluation.find_best_configuration import find_best_configuration

    planned = [c for c in configurations if read_json(layout.nnunet_train_done(dataset, c, folds[0]))["planned"]]
    if not planned:
        raise ValueError(f"{dataset}: nnU-Net planned none of {configurations}; nothing to select from")
    models = [{"plans": PLANS, "configuration": c, "trainer": TRAINER} for c in planned]
    info = find_best_configuration(
        dataset_id,
        models,
        allow_ensembling=len(models) > 1,
        num_processes=int(os.environ["nnUNet_def_n_proc"]),
        overwrite=True,
        folds=tuple(folds),
        strict=True,
    )
    best = info["best_model_or_ensemble"]
    stamp = {
        "dataset": dataset,
        "folds": list(folds),
        "candidates": {k: float(v) for k, v in info["all_results"].items()},
        "selected": [m["configuration"] for m in best["selected_model_or_models"]],
        "cv_dice": float(best["result_on_crossval_pre_pp"]),
        "cv_dice_postprocessed": float(best["result_on_crossval_post_pp"]),
        "postprocessing_file": best["postprocessing_file"],
        "plans_file": best["some_plans_file"],
    }
    log.info("%s: nnU-Net selected %s (cross-validation Dice %.4f)", dataset, stamp["selected"], stamp["cv_dice"])
    write_json(layout.nnunet_best_done(dataset), stamp)
    return stamp


def predict_best(layout: Layout, dataset: str, dataset_id: int, folds: list[int], settings: dict) -> list[str]:
    """Predict the test cases with nnU-Net's selected model or ensemble, then its postprocessing."""
    setup_environment(layout)
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.ensembling.ensemble import ensemble_folders
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    best = read_json(layout.nnunet_best_done(dataset))
    exported = read_json(layout.nnunet_export_done(dataset))
    n_proc = int(os.environ["nnUNet_def_n_proc"])
    inputs = _test_inputs(exported)
    ensemble = len(best["selected"]) > 1
    with tempfile.TemporaryDirectory(dir=layout.nnunet_root()) as tmp:
        members = []
        for configuration in best["selected"]:
            member = Path(tmp, configuration)
            _predict_configuration(layout, dataset, configuration, folds, inputs, member, settings, ensemble)
            members.append(str(member))
        merged = Path(tmp, "merged")
        if ensemble:
            ensemble_folders(members, str(merged), num_processes=n_proc)
        else:
            merged = Path(members[0])
        post = Path(tmp, "postprocessed")
        pp_fns, pp_fn_kwargs = load_pickle(best["postprocessing_file"])
        apply_postprocessing_to_folder(
            str(merged),
            str(post),
            pp_fns,
            pp_fn_kwargs,
            plans_file_or_dict=best["plans_file"],
            dataset_json_file_or_dict=str(Path(members[0], "dataset.json")),
            num_processes=n_proc,
        )
        return _move_predictions(layout, nnunet_run_name("best"), dataset, exported["test"], post)
