"""Load and validate the study config against the one schema (shared with the Snakefile)."""

from __future__ import annotations

import copy
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_NAME = "config.schema.yaml"
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The config does not match the schema or is inconsistent."""


def schema_path() -> str:
    """Path of the config JSON-schema (workflow/schemas/config.schema.yaml links to it)."""
    return str(resources.files("samstudy").joinpath(SCHEMA_NAME))


def schema() -> dict:
    """The config JSON-schema as a dict."""
    return yaml.safe_load(resources.files("samstudy").joinpath(SCHEMA_NAME).read_text())


# Structural options of the adaptation methods: key -> (the adaptation it belongs to, default).
METHOD_OPTIONS = {"rank": ("lora", 4), "alpha": ("lora", 8.0), "bottleneck": ("adapter", 32)}
# Adaptations that change the image encoder: they cannot use the base model's cached embeddings.
ENCODER_ADAPTATIONS = frozenset({"lora", "adapter", "full"})
# SAM 2 model types (samstudy.families.sam2), what of samstudy they run, and the protocols only they run.
SAM2_TYPES = ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "medsam2")
SAM2_ADAPTATIONS = ("none", "decoder")
VIDEO_PROTOCOLS = ("propagate",)  # SAM 2's memory propagates a mask through the slices


def runs_protocol(cfg: dict[str, Any], method: str, protocol: str) -> bool:
    """Whether a prompt-based method runs a protocol (a ground-truth one or a derived one): `propagate`
    needs SAM 2's video memory, so only SAM 2 methods run it; every other protocol runs with every method."""
    kind = cfg["prompts"]["derived"].get(protocol, {}).get("kind", protocol)
    if kind not in VIDEO_PROTOCOLS:
        return True
    return cfg["models"][cfg["methods"][method]["model"]]["type"] in SAM2_TYPES


def embed_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The embed stage's settings: the config's `embed` section and `training_slices`, the slices of the
    training and validation cases to embed. `embed.slices: all` is for the cases the automatic arms look
    at, the test cases; adaptation training reads only the labelled slices of its cases (train.
    collect_samples), so they get `needed`, unless a promptfree method trains on unlabelled slices too
    (train.collect_slices)."""
    promptfree = any(m["adaptation"] == "promptfree" for m in cfg["methods"].values())
    return {**cfg["embed"], "training_slices": cfg["embed"]["slices"] if promptfree else "needed"}


def remove_nulls(config: dict[str, Any]) -> dict[str, Any]:
    """`null` removes an entry: every key whose value is null is deleted (in place, at every depth, also in
    the mappings of a list), so a config merged over the default study can drop what it does not want
    (`methods: {decoder: null}`); a removed setting takes its schema default. Returns `config`."""
    for key in [k for k, v in config.items() if v is None]:
        del config[key]
    for value in config.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                remove_nulls(item)
    return config


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a config, fill defaults, check cross-references; return a new dict. A null value removes
    its entry first (`remove_nulls`)."""
    from snakemake.utils import validate as sm_validate  # same defaults-filling validator as the Snakefile

    cfg = remove_nulls(copy.deepcopy(config))
    try:
        sm_validate(cfg, schema_path(), set_default=True)
    except Exception as err:  # snakemake wraps jsonschema's error in its own WorkflowError
        raise ConfigError(f"config does not match the schema: {err}") from err
    for name, model in cfg["models"].items():
        model.setdefault("checkpoint", None)
        model.setdefault("sha256", None)
        if model["type"] != "litemedsam" and not model["checkpoint"] and not model.get("random_init"):
            raise ConfigError(f"models.{name}: type {model['type']} needs a 'checkpoint' path (or random_init: true)")
        if "image_size" in model and model["type"] not in SAM2_TYPES:
            raise ConfigError(f"models.{name}: image_size applies to the SAM 2 types only ({', '.join(SAM2_TYPES)})")
        if model.get("random_init"):
            # seeded random weights: the entry's own seed, else the study's (real weights take none, so
            # their entries, and the jobs that carry them as params, stay as they were)
            model.setdefault("seed", cfg["seed"])
        elif "seed" in model:
            raise ConfigError(f"models.{name}: 'seed' applies to random_init: true entries only (random weights)")
    for name, method in cfg["methods"].items():
        method.setdefault("adaptation", "none")
        if method["model"] not in cfg["models"]:
            raise ConfigError(f"methods.{name}: model '{method['model']}' is not defined under 'models'")
        if cfg["models"][method["model"]]["type"] in SAM2_TYPES and method["adaptation"] not in SAM2_ADAPTATIONS:
            raise ConfigError(
                f"methods.{name}: adaptation '{method['adaptation']}' is not built for SAM 2 models (they run "
                f"{', '.join(SAM2_ADAPTATIONS)}): promptfree builds a segment_anything mask decoder, which SAM 2's "
                "(high-resolution features, object-score head) is not; lora, adapter and full are not verified "
                "on the Hiera encoder yet"
            )
        for key, (adaptation, default) in METHOD_OPTIONS.items():
            if method["adaptation"] == adaptation:
                method.setdefault(key, default)
            elif key in method:
                raise ConfigError(f"methods.{name}: '{key}' applies to adaptation '{adaptation}' only")
    nn = cfg["nnunet"]
    n_folds = cfg["splits"]["n_folds"]
    if nn["folds"] == "all":
        nn["folds"] = list(range(n_folds))
    if any(f >= n_folds for f in nn["folds"]):
        raise ConfigError(f"nnunet.folds {nn['folds']}: the study splits have {n_folds} fold(s) (splits.n_folds)")
    if "3d_cascade_fullres" in nn["configurations"] and "3d_lowres" not in nn["configurations"]:
        raise ConfigError("nnunet.configurations: 3d_cascade_fullres needs 3d_lowres (its first stage)")
    if "3d_cascade_fullres" in nn["configurations"] and sorted(nn["folds"]) != list(range(n_folds)):
        raise ConfigError(
            "nnunet: 3d_cascade_fullres needs every fold (folds: all): its first stage's predictions "
            "of all training cases come from the 3d_lowres cross-validation"
        )
    _check_prompt_sources(cfg)
    names = [d["name"] for d in cfg["datasets"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"datasets: duplicate dataset name(s) {dupes}")
    for ds in cfg["datasets"]:
        ds.setdefault("role", "train_test")
        _check_dataset_entry(ds)
    return cfg


def _check_prompt_sources(cfg: dict[str, Any]) -> None:
    """Derived (automatic) protocols take their prompts from an automatic run (nnU-Net, prompt-free SAM);
    automatic arms need every slice embedded. A source this study does not make (nnU-Net disabled, or
    another configuration) adds no run, with a warning: a config merged over the default study cannot
    remove the default's `auto_box`."""
    derived = cfg["prompts"]["derived"]
    properties = schema()["properties"]
    ground_truth = properties["prompts"]["properties"]["protocols"]["items"]["enum"]
    nn = cfg["nnunet"]
    promptfree = [m for m, spec in cfg["methods"].items() if spec["adaptation"] == "promptfree"]
    # Only automatic runs may be sources: boxes from a ground-truth-prompted run's masks would carry the
    # ground truth into an arm filed as automatic.
    configurations = properties["nnunet"]["properties"]["configurations"]["items"]["enum"]
    possible = {f"nnunet_{c}" for c in configurations} | {"nnunet_best"} | {f"{m}.none" for m in promptfree}
    made = {f"{m}.none" for m in promptfree}
    if nn["enabled"]:
        made |= {f"nnunet_{c}" for c in nn["configurations"]} | ({"nnunet_best"} if nn["select_best"] else set())
    active = []
    for name, spec in derived.items():
        if name in ground_truth or name == "none":
            raise ConfigError(f"prompts.derived.{name}: the name is taken by a ground-truth protocol; choose another")
        if spec["from"] not in possible:
            raise ConfigError(
                f"prompts.derived.{name}.from: '{spec['from']}' is not an automatic run (prompts from a "
                f"ground-truth-prompted run would leak the ground truth); automatic runs: {sorted(possible)}"
            )
        if spec["from"] in made:
            active.append(name)
        else:
            log.warning("prompts.derived.%s: this study makes no run %s: it adds no run", name, spec["from"])
    if (active or promptfree) and cfg["embed"]["slices"] != "all":
        what = f"prompts.derived {active}" if active else f"methods {promptfree} (promptfree)"
        raise ConfigError(
            f"{what}: automatic arms need every slice embedded (embed.slices: all): selecting slices by the "
            "ground truth would tell them where the structures are"
        )


RASTER_ENDINGS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def nnunet_raster(ds: dict[str, Any]) -> bool:
    """An nnU-Net raw dataset of 2D image files (its dataset.json's file_ending is .png, .jpg, ...)."""
    if ds["format"] != "nnunet" or not ds.get("path"):
        return False
    meta = Path(ds["path"]).expanduser() / "dataset.json"
    try:
        return str(json.loads(meta.read_text()).get("file_ending", "")).lower() in RASTER_ENDINGS
    except (OSError, ValueError):
        return False  # ingest reports a missing or unreadable dataset.json, naming the file


def is_2d(ds: dict[str, Any]) -> bool:
    """Whether a dataset entry holds 2D images (png files, nnU-Net raster datasets, the png2d phantom)."""
    if ds["format"] == "png" or nnunet_raster(ds):
        return True
    return ds["format"] == "synthetic" and (ds.get("synthetic") or {}).get("kind") == "png2d"


def patient_csv(ds: dict[str, Any]) -> str | None:
    """The patient-id CSV of a dataset entry (a relative path is under the dataset's `path`), or None."""
    spec = ds.get("patient_id")
    if not isinstance(spec, dict):
        return None
    path = Path(spec["csv"])
    return str(path if path.is_absolute() or not ds.get("path") else Path(ds["path"]) / path)


# Default image/label patterns of the pattern-matched formats.
DEFAULT_PATTERNS = {
    "nifti": ("images/{case}.nii.gz", "labels/{case}.nii.gz"),
    "dicom": ("images/{case}", "labels/{case}.nii.gz"),
    "png": ("images/{case}.png", "masks/{case}.png"),
}


def _check_dataset_entry(ds: dict[str, Any]) -> None:
    """Cross-key rules of one dataset entry (what the schema cannot say); fills format defaults."""
    where = f"datasets.{ds['name']}"
    builtin = ds.get("builtin")
    if builtin:
        # A built-in real dataset (e.g. mni152) is written by samstudy and read by its `format`.
        if builtin["kind"] == "mni152":
            if ds["format"] != "nifti":
                raise ConfigError(f"{where}: builtin mni152 is written as NIfTI: use format nifti")
            if ds["role"] != "test_only":
                raise ConfigError(f"{where}: builtin mni152 is one subject: it can only be role test_only")
    elif ds["format"] != "synthetic" and not ds.get("path"):
        raise ConfigError(f"{where}: format {ds['format']} needs a 'path'")
    if ds["format"] in ("nifti", "dicom", "png") and not ds.get("labels") and not builtin:
        raise ConfigError(f"{where}: format {ds['format']} has no dataset.json; declare its label values in 'labels'")
    if ds["format"] in DEFAULT_PATTERNS:
        image, label = DEFAULT_PATTERNS[ds["format"]]
        ds.setdefault("image_pattern", image)
        ds.setdefault("label_pattern", label)
    for key in ("spacing", "mask_threshold"):
        if key in ds and ds["format"] != "png" and not nnunet_raster(ds):
            raise ConfigError(
                f"{where}: '{key}' applies to 2D image files only (format png, or nnunet with a raster "
                "file_ending); other formats carry their geometry"
            )
    if isinstance(ds.get("patient_id"), dict):
        ds["patient_id"].setdefault("case_column", "case_id")
        ds["patient_id"].setdefault("patient_column", "patient_id")
    if ds["format"] == "synthetic":
        phantom = ds.setdefault("synthetic", {})
        kind = phantom.setdefault("kind", "ct3d")
        ndim = 2 if kind == "png2d" else 3
        for key in ("shape", "spacing"):
            if key in phantom and len(phantom[key]) != ndim:
                raise ConfigError(f"{where}: synthetic.{key} of a {kind} phantom has {ndim} entries")
        for key in ("rotation_deg", "noise_hu"):
            if key in phantom and kind != "ct3d":
                raise ConfigError(f"{where}: synthetic.{key} applies to the ct3d phantom only")


def generated(ds: dict[str, Any]) -> bool:
    """A built-in dataset (the phantoms, mni152): samstudy writes its files from the config, so they are
    outputs of its ingest job, not inputs, and its path need not exist yet."""
    return ds["format"] == "synthetic" or bool(ds.get("builtin"))


def check_paths(cfg: dict[str, Any]) -> None:
    """The user's data exist: a dataset `path` (and a patient-id CSV) that is not there is a config error
    before any job runs. Built-in datasets are written at their path, so theirs need not exist yet."""
    for ds in cfg["datasets"]:
        if generated(ds):
            continue
        where = f"datasets.{ds['name']}"
        path = Path(ds["path"]).expanduser()
        if not path.is_dir():
            what = "is a file, not a dataset folder" if path.exists() else "does not exist"
            raise ConfigError(f"{where}.path: {path} {what}")
        csv = patient_csv(ds)
        if csv and not Path(csv).is_file():
            raise ConfigError(f"{where}.patient_id.csv: {csv} does not exist")


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it."""
    with open(path) as fh:
        return validate(yaml.safe_load(fh) or {})


def dataset(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The dataset entry called `name`."""
    for ds in cfg["datasets"]:
        if ds["name"] == name:
            return ds
    raise ConfigError(f"no dataset named '{name}' in the config")


def as_param(value: Any) -> str:
    """A canonical JSON string of a config slice: what a rule passes on and what Snakemake compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
