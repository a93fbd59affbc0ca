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

Prompted nnU-Net (`prompted=True`; runs nnunet_prompted_<configuration>): the oracle counterpart of
box-prompted SAM, its own nnU-Net dataset (<dataset>_prompted, its own id) with one extra binary channel
per declared label ("noNorm": nnU-Net does not normalise it), 1 inside the label's box on every slice along
the study's slice axis where the label is present. Training cases: the ground-truth box jittered outward by
U(0, jitter_px) per side (seeded); test cases: the stored `box` prompts (written at prediction time, so
new prompts rerun only the prediction). The same export, plan, train and predict functions do both.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samstudy.cases import load_dataset_table, read_case, select
from samstudy.io import atomic_path, read_json, sha256_json, write_json
from samstudy.paths import NNUNET_PROMPT_PROTOCOL, Layout, nnunet_run_name, nnunet_variant_run_name
from samstudy.preprocess import from_slices, load_preprocessed
from samstudy.prompts import case_rng, jitter_box, load_prompts, tight_box
from samstudy.readers import is_raster, read_image
from samstudy.splits import cases_in, load_split

log = logging.getLogger(__name__)

TRAINER = "nnUNetTrainer"
PLANS = "nnUNetPlans"


def dataset_folder_name(dataset_id: int, dataset: str) -> str:
    return f"Dataset{dataset_id:03d}_{dataset}"


# Prompted nnU-Net: its nnU-Net dataset is <dataset>_prompted; each declared label's box is one extra channel
# named "noNorm" (nnunetv2 2.8.1 maps this name, case-insensitively, to NoNormalization: the 0/1 mask is
# fed as it is).
PROMPTED_SUFFIX = "prompted"
PROMPT_CHANNEL = "noNorm"
PROMPT_PROTOCOL = NNUNET_PROMPT_PROTOCOL  # the test cases' boxes: the very prompts box-prompted SAM gets


def _nnunet_name(dataset: str, prompted: bool) -> str:
    return f"{dataset}_{PROMPTED_SUFFIX}" if prompted else dataset


def label_values(info: dict) -> list[int]:
    """The dataset's declared foreground labels in order: one prompt channel each."""
    return sorted(int(v) for v in info["labels"])


def train_box_channels(labels: np.ndarray, values: list[int], jitter_px: int, rng: np.random.Generator) -> np.ndarray:
    """A training case's prompt channels, (labels, slices, H, W) uint8: on every slice where a label is
    present, its tight box moved outward by U(0, jitter_px) per side (prompts.jitter_box, as SAM's
    adaptation training jitters its boxes) filled with 1. `labels`: the (slices, H, W) label slices."""
    out = np.zeros((len(values), *labels.shape), dtype=np.uint8)
    for s in range(labels.shape[0]):
        for value in np.unique(labels[s]):
            if value == 0:
                continue
            x0, y0, x1, y1 = jitter_box(tight_box(labels[s] == value), jitter_px, labels.shape[1:], rng)
            out[values.index(int(value)), s, y0 : y1 + 1, x0 : x1 + 1] = 1
    return out


def prompt_box_channels(prompts: list[dict], shape: tuple[int, int, int], values: list[int]) -> np.ndarray:
    """A test case's prompt channels, (labels, slices, H, W) uint8, from its stored `box` prompts: each
    label's box filled with 1 on each slice it is prompted on. Should the prompts name several components
    of a label on one slice (`prompts.components` all), their enclosing box is used: one box per label per
    slice, as in training."""
    boxes: dict[tuple[int, int], list[int]] = {}
    for p in prompts:
        if "box" not in p:
            raise ValueError(f"prompted nnU-Net needs box prompts; got {sorted(p)}")
        key = (int(p["slice"]), int(p["label"]))
        b = boxes.get(key, p["box"])
        boxes[key] = [min(b[0], p["box"][0]), min(b[1], p["box"][1]), max(b[2], p["box"][2]), max(b[3], p["box"][3])]
    out = np.zeros((len(values), *shape), dtype=np.uint8)
    for (s, value), (x0, y0, x1, y1) in boxes.items():
        out[values.index(value), s, y0 : y1 + 1, x0 : x1 + 1] = 1
    return out


def _image_channels(folder: Path, case: str) -> list[Path]:
    return sorted(folder.glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))


def _write_prompt_channels(channels: np.ndarray, axis: int, reference: Path, folder: Path, case: str) -> list[str]:
    """Write prompt channels (labels, slices, H, W) after the case's image channels in `folder`, put back
    from the study's slices into the volume and given the geometry of `reference` (the image's channel 0)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    first = len(_image_channels(reference.parent, case))
    written = []
    for k, channel in enumerate(channels):
        array = from_slices(channel, axis)
        if reader.GetDimension() == 2:  # a 2D case is one slice
            array = array[0]
        if array.shape != tuple(reversed(reader.GetSize())):
            raise ValueError(f"{case}: prompt channel {array.shape} does not fit the image {reader.GetSize()}")
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(reader.GetSpacing())
        img.SetOrigin(reader.GetOrigin())
        img.SetDirection(reader.GetDirection())
        path = folder / f"{case}_{first + k:04d}.nii.gz"
        with atomic_path(path) as tmp:
            sitk.WriteImage(img, str(tmp), useCompression=True)
        written.append(str(path))
    return written


def write_test_prompt_channels(layout: Layout, dataset: str, folder: Path) -> list[list[str]]:
    """The prompted dataset's test inputs: each test case's image channels (imagesTs) and, written into
    `folder`, its prompt channels from the stored `box` prompts. One list of files per test case."""
    exported = read_json(layout.nnunet_export_done(dataset, prompted=True))
    prompts = load_prompts(layout, dataset, PROMPT_PROTOCOL)["cases"]
    values = exported["prompt_labels"]
    folder.mkdir(parents=True, exist_ok=True)
    inputs = []
    cases = _test_cases(layout, dataset, exported)
    for case, images in zip(cases, _test_inputs(exported, cases), strict=True):
        for image in images:  # the image channels beside the prompt channels (nnU-Net wants one folder's names)
            _link(image, folder / Path(image).name)
        pre = load_preprocessed(layout, dataset, case)  # the slice axis and shape (its labels are not read)
        channels = prompt_box_channels(prompts.get(case, []), pre["labels"].shape, values)
        inputs.append([str(folder / Path(p).name) for p in images])
        inputs[-1] += _write_prompt_channels(channels, int(pre["axis"]), folder / Path(images[0]).name, folder, case)
    return inputs


def setup_environment(layout: Layout, threads: int | None = None) -> dict[str, str]:
    """nnU-Net's folders and process counts; must run before nnunetv2 is imported."""
    root = Path(layout.nnunet_root()).resolve()
    env = {
        "nnUNet_raw": str(root / "nnUNet_raw"),
        "nnUNet_preprocessed": str(root / "nnUNet_preprocessed"),
        "nnUNet_results": str(root / "nnUNet_results"),
        "nnUNet_compile": "f",
    }
    # the job's cores (the CLI's --threads, Snakemake's {threads}), else the machine's
    cpus = threads or int(os.environ.get("SAMSTUDY_THREADS", "0")) or len(os.sched_getaffinity(0))
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


def export(
    layout: Layout, dataset: str, dataset_id: int, prompted: bool = False, jitter_px: int = 0, seed: int = 0
) -> dict:
    """Write the nnU-Net raw dataset and splits_final.json for one study dataset. `prompted`: the prompted
    variant's dataset, whose training cases get one box channel per label (ground-truth boxes jittered by
    U(0, jitter_px) per side, seeded by `seed`); its test cases' box channels are written at prediction
    time from the stored box prompts (write_test_prompt_channels)."""
    env = setup_environment(layout)
    table, info = load_dataset_table(layout, dataset)
    split = load_split(layout, dataset)
    raw = Path(env["nnUNet_raw"]) / dataset_folder_name(dataset_id, _nnunet_name(dataset, prompted))
    values = label_values(info)
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
        if prompted and case not in test:
            pre = load_preprocessed(layout, dataset, case)
            rng = case_rng(seed, dataset, case, "nnunet_prompted")
            channels = train_box_channels(pre["labels"], values, jitter_px, rng)
            _write_prompt_channels(channels, int(pre["axis"]), raw / folder / f"{case}_0000.nii.gz", raw / folder, case)
        if case not in test:
            image, label = read_case(row, info)
            lab = sitk.GetImageFromArray(label.astype(np.uint8))
            lab.CopyInformation(image)
            with atomic_path(raw / "labelsTr" / f"{case}.nii.gz") as tmp:
                sitk.WriteImage(lab, str(tmp), useCompression=True)
    labels = {"background": 0, **{name: int(v) for v, name in info["labels"].items()}}
    channel_names = _channel_names(info, rows["modality"].iloc[0])
    if prompted:
        first = len(channel_names)
        channel_names.update({str(first + k): PROMPT_CHANNEL for k in range(len(values))})
    write_json(
        raw / "dataset.json",
        {
            "channel_names": channel_names,
            "labels": labels,
            "numTraining": len(train),
            "file_ending": ".nii.gz",
            "name": _nnunet_name(dataset, prompted),
        },
    )
    write_json(raw / "splits_final.json", split["folds"])
    stamp = {"dataset": dataset, "dataset_id": dataset_id, "raw": str(raw), "train": train, "test": sorted(test)}
    if prompted:
        stamp.update({"prompted": True, "prompt_labels": values, "jitter_px": jitter_px, "seed": seed})
        stamp["prompt_channels"] = {str(v): first + k for k, v in enumerate(values)}
    write_json(layout.nnunet_export_done(dataset, prompted), stamp)
    return stamp


def plan(
    layout: Layout, dataset: str, dataset_id: int, configurations: list[str], schedule: str, prompted: bool = False
) -> dict:
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
    name = dataset_folder_name(dataset_id, _nnunet_name(dataset, prompted))
    pre = Path(env["nnUNet_preprocessed"]) / name
    shutil.copyfile(Path(env["nnUNet_raw"]) / name / "splits_final.json", pre / "splits_final.json")
    plans = read_json(pre / f"{PLANS}.json")
    stamp = {"dataset": dataset, "dataset_id": dataset_id, "configurations_planned": sorted(plans["configurations"])}
    write_json(layout.nnunet_plan_done(dataset, prompted), stamp)
    return stamp


# Convergence from nnU-Net's own training curve (see curve_convergence).
CONVERGENCE_WINDOW = 5
CONVERGENCE_TOLERANCE = 0.02


def curve_convergence(
    ema: list[float], window: int = CONVERGENCE_WINDOW, tolerance: float = CONVERGENCE_TOLERANCE
) -> dict:
    """Whether a training has converged, judged from nnU-Net's EMA pseudo-Dice curve (one value per epoch).

    nnU-Net logs, after every epoch, the pseudo-Dice of its validation batches (`mean_fg_dice`) and its
    exponential moving average `ema_fg_dice` (ema_t = 0.9 ema_{t-1} + 0.1 dice_t); it is the curve nnU-Net
    itself picks its best checkpoint by, and it is kept in the checkpoint (`checkpoint["logging"]`).

    Rule: NOT converged when the EMA pseudo-Dice is still rising over the last `window` epochs, i.e.
    ema[-1] - ema[-1 - window] > `tolerance`; converged otherwise (flat or falling). Fewer than `window` + 1
    logged epochs are too short a curve to judge: not converged. (A curve stuck flat at a low Dice counts as
    converged: training longer would not help; the Dice itself says the model is poor.)

    Why window 5 and tolerance 0.02: the EMA remembers ~10 epochs (factor 0.9), so 5 epochs back is the
    nearest value made mostly of other epochs' Dice, and quick schedules of 10-30 epochs still have 5 to look
    back over. On a flat curve with independent per-epoch pseudo-Dice noise of sd s, the EMA's 5-epoch change
    has sd ~0.21 s (sqrt(0.1 / 1.9) * sqrt(2 (1 - 0.9^5))): 0.006-0.008 for the s = 0.03-0.04 that nnU-Net's
    few validation batches give, so 0.02 (2.4-3.2 sd) calls a flat curve rising in < 1% of cases, while a
    curve still climbing by 0.004 Dice per epoch or more (4 Dice points in 10 more epochs) is caught.

    Returns {"converged", "ema_last", "ema_before", "rise", "window_epochs", "tolerance", "epochs", "evidence"}
    (evidence: one sentence for the report).
    """
    values = [float(v) for v in ema]
    out = {"epochs": len(values), "tolerance": tolerance, "window_epochs": window}
    if len(values) < window + 1:
        last = values[-1] if values else None
        return {
            **out,
            "converged": False,
            "ema_last": last,
            "ema_before": None,
            "rise": None,
            "evidence": f"EMA pseudo-Dice curve too short to judge: {len(values)} epochs logged, the rule needs "
            f"{window + 1}" + (f" (last value {last:.2f})" if last is not None else ""),
        }
    last, before = values[-1], values[-1 - window]
    rise = last - before
    converged = rise <= tolerance
    trend = "not rising" if converged else "still rising"
    return {
        **out,
        "converged": converged,
        "ema_last": last,
        "ema_before": before,
        "rise": rise,
        "evidence": f"EMA pseudo-Dice {trend}: {before:.2f} -> {last:.2f} over the last {window} epochs "
        f"(rise {rise:+.3f}, tolerance {tolerance})",
    }


def _cap_features(plans: dict, configuration: str, max_features: int) -> None:
    arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [min(int(f), max_features) for f in arch["features_per_stage"]]


def _planned(layout: Layout, dataset: str, dataset_id: int, prompted: bool = False) -> tuple[Path, dict]:
    env = setup_environment(layout)
    pre = Path(env["nnUNet_preprocessed"]) / dataset_folder_name(dataset_id, _nnunet_name(dataset, prompted))
    return pre, read_json(pre / f"{PLANS}.json")


def train(
    layout: Layout,
    dataset: str,
    dataset_id: int,
    configuration: str,
    fold: int,
    settings: dict,
    seed: int,
    prompted: bool = False,
) -> dict:
    """Train one configuration on one study fold with nnU-Net's own trainer, then run nnU-Net's validation
    of that fold (its cross-validation predictions; with probabilities when the best configuration is to
    be selected, as ensembling needs them)."""
    if len(os.sched_getaffinity(0)) <= 2:
        os.environ.setdefault("nnUNet_n_proc_DA", "0")  # in-process augmentation: no thrash, bit-reproducible
    pre, plans = _planned(layout, dataset, dataset_id, prompted)
    stamp = {
        "dataset": dataset,
        "configuration": configuration,
        "fold": fold,
        "schedule": settings["schedule"],
        "prompted": prompted,  # the prompted variant (label boxes as extra channels): its own run
        "converged": None,  # from nnU-Net's training curve once trained (curve_convergence)
    }
    if configuration not in plans["configurations"]:
        log.warning("%s: nnU-Net did not plan %s for this dataset; nothing to train", dataset, configuration)
        stamp["planned"] = False
        write_json(layout.nnunet_train_done(dataset, configuration, fold, prompted), stamp)
        return stamp
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from samstudy.models import resolve_device  # imports torch: only the jobs that train or predict

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
    if not marker.is_file():  # a fresh training: record the torch threads it runs with (on a CPU the
        # weights depend on them through float sums; a resumed run keeps the first record)
        write_json(marker, {"run_id": run_id, "torch_threads": torch.get_num_threads()})
    stamp["torch_threads"] = read_json(marker).get("torch_threads")
    if final.is_file():
        log.info("%s fold %d: training already finished (%s)", dataset, fold, final)
        trainer.load_checkpoint(str(final))
    else:
        if latest.is_file():
            log.info("%s fold %d: resuming from %s", dataset, fold, latest)
            trainer.load_checkpoint(str(latest))
        trainer.run_training()
    convergence = curve_convergence(trainer.logger.get_value("ema_fg_dice", step=None))
    log.info("%s %s fold %d: %s", dataset, configuration, fold, convergence["evidence"])
    summary = out / "validation" / "summary.json"
    if not summary.is_file() or (settings.get("select_best") and not any((out / "validation").glob("*.npz"))):
        trainer.perform_actual_validation(save_probabilities=bool(settings.get("select_best")))
    stamp.update(
        {
            "planned": True,
            "model_folder": str(out.parent),
            "checkpoint": str(final),
            "validation_dice": read_json(summary)["foreground_mean"]["Dice"],
            "converged": convergence["converged"],
            "ema_fg_dice_last": convergence["ema_last"],
            "convergence": convergence,
        }
    )
    write_json(layout.nnunet_train_done(dataset, configuration, fold, prompted), stamp)
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
    prompted: bool = False,
) -> None:
    """nnU-Net's predictor with one configuration's trained folds (it averages the folds). The cascade
    first predicts its 3d_lowres stage, whose segmentations it takes as input."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from samstudy.models import resolve_device

    previous = None
    if configuration == "3d_cascade_fullres":
        previous = out_dir.parent / f"{out_dir.name}.3d_lowres"
        _predict_configuration(layout, dataset, "3d_lowres", folds, inputs, previous, settings, False, prompted)
    stamp = read_json(layout.nnunet_train_done(dataset, configuration, folds[0], prompted))
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


def _test_cases(layout: Layout, dataset: str, exported: dict) -> list[str]:
    """The exported test cases this job predicts: all, or those of its shard (a sharded job's layout)."""
    return select(layout, dataset, list(exported["test"]))


def _test_inputs(exported: dict, cases: list[str]) -> list[list[str]]:
    raw = Path(exported["raw"])
    return [sorted(str(p) for p in (raw / "imagesTs").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz")) for case in cases]


def _move_predictions(layout: Layout, run: str, dataset: str, cases: list[str], folder: Path) -> list[str]:
    written = []
    Path(layout.prediction_dir(run, dataset)).mkdir(parents=True, exist_ok=True)
    for case in cases:
        dst = layout.prediction(run, dataset, case)
        os.replace(folder / f"{case}.nii.gz", dst)
        written.append(dst)
    return written


def predict(
    layout: Layout,
    dataset: str,
    dataset_id: int,
    configuration: str,
    folds: list[int],
    settings: dict,
    prompted: bool = False,
) -> list[str]:
    """Predict the study's test cases with a configuration's trained folds into predictions/nnunet_<cfg>/
    (prompted: predictions/nnunet_prompted_<cfg>/, the test cases' box channels from the stored box prompts)."""
    setup_environment(layout)
    stamps = [read_json(layout.nnunet_train_done(dataset, configuration, f, prompted)) for f in folds]
    exported = read_json(layout.nnunet_export_done(dataset, prompted))
    run = nnunet_variant_run_name(configuration, prompted)
    if not all(st["planned"] for st in stamps):
        reason = f"nnU-Net did not plan {configuration} for {dataset}: no model, no predictions"
        write_json(layout.prediction_not_planned(run, dataset), {"reason": reason})
        log.warning(reason)
        return []
    cases = _test_cases(layout, dataset, exported)
    if not cases:  # a shard without test cases: an empty predictions folder
        return _move_predictions(layout, run, dataset, [], Path())
    with tempfile.TemporaryDirectory(dir=layout.nnunet_root()) as tmp:
        out = Path(tmp, configuration)
        if prompted:
            inputs = write_test_prompt_channels(layout, dataset, Path(tmp, "imagesTs"))
        else:
            inputs = _test_inputs(exported, cases)
        _predict_configuration(layout, dataset, configuration, folds, inputs, out, settings, False, prompted)
        return _move_predictions(layout, run, dataset, cases, out)


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
    cases = _test_cases(layout, dataset, exported)
    if not cases:  # a shard without test cases: an empty predictions folder
        return _move_predictions(layout, nnunet_run_name("best"), dataset, [], Path())
    inputs = _test_inputs(exported, cases)
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
        return _move_predictions(layout, nnunet_run_name("best"), dataset, cases, post)
