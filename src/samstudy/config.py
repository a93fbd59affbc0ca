"""Load and validate the study config against the one schema (shared with the Snakefile)."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from samstudy import readers

SCHEMA_NAME = "config.schema.yaml"


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
    """Validate a config against the schema, fill defaults, check cross-references; return a new dict. A
    null value removes its entry first (`remove_nulls`). What the study runs (what a model family can run
    and needs, where derived prompts come from, what trains on what) is the study table's check: use
    `samstudy.study.validate` for the whole of it (this layer knows no family)."""
    from snakemake.utils import validate as sm_validate  # same defaults-filling validator as the Snakefile

    cfg = remove_nulls(copy.deepcopy(config))
    try:
        sm_validate(cfg, schema_path(), set_default=True)
    except Exception as err:  # snakemake wraps jsonschema's error in its own WorkflowError
        raise ConfigError(f"config does not match the schema: {err}") from err
    for name, model in cfg["models"].items():
        model.setdefault("checkpoint", None)
        model.setdefault("sha256", None)
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
    names = [d["name"] for d in cfg["datasets"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"datasets: duplicate dataset name(s) {dupes}")
    for ds in cfg["datasets"]:
        ds.setdefault("role", "train_test")
        _check_dataset_entry(ds)
    return cfg


def _check_dataset_entry(ds: dict[str, Any]) -> None:
    """Cross-key rules of one dataset entry (what the schema cannot say): its reader's (samstudy.readers),
    which fills format defaults; a broken rule is a ConfigError with the reader's message."""
    try:
        readers.check_entry(ds)
    except readers.EntryError as err:
        raise ConfigError(str(err)) from None


def check_paths(cfg: dict[str, Any]) -> None:
    """The user's data exist: a dataset `path` (and a patient-id CSV) that is not there is a config error
    before any job runs. Built-in datasets are written at their path, so theirs need not exist yet."""
    for ds in cfg["datasets"]:
        try:
            readers.check_files(ds)
        except readers.EntryError as err:
            raise ConfigError(str(err)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML config file as a dict (an empty file is an empty config)."""
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (`validate`: the schema and this layer's checks;
    `samstudy.study.load` adds the study table's)."""
    return validate(read_yaml(path))


def dataset(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The dataset entry called `name`."""
    for ds in cfg["datasets"]:
        if ds["name"] == name:
            return ds
    raise ConfigError(f"no dataset named '{name}' in the config")


def as_param(value: Any) -> str:
    """A canonical JSON string of a config slice: what a rule passes on and what Snakemake compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
