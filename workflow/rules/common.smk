# Shared by all stages. The validated config, the one path layout, the runs of the study.
import shlex

from samstudy import config as samstudy_config
from samstudy import readers
from samstudy.paths import (
    Layout,
    nnunet_prompted_run_name,
    nnunet_run_name,
    run_name,
    shard_names,
)

CFG = samstudy_config.validate(config)
# A dataset path that does not exist stops the study here, before any job runs.
samstudy_config.check_paths(CFG)
P = samstudy_config.as_param
L = Layout(CFG["results_dir"], CFG["cache_dir"])
DATASETS = {d["name"]: d for d in CFG["datasets"]}
TRAIN_DATASETS = [d for d, ds in DATASETS.items() if ds["role"] == "train_test"]
NNUNET_DATASETS = TRAIN_DATASETS if CFG["nnunet"]["enabled"] else []
NNUNET_CONFIGS = CFG["nnunet"]["configurations"]
NNUNET_FOLDS = CFG["nnunet"]["folds"]
NNUNET_BEST = bool(NNUNET_DATASETS) and CFG["nnunet"]["select_best"]
# nnU-Net given each label's box as extra input channels: the oracle counterpart of box-prompted SAM.
NNUNET_PROMPTED = bool(NNUNET_DATASETS) and CFG["nnunet"]["prompted"]
# What nnU-Net training and prediction depend on (not the lists of configurations and folds).
NNUNET_TRAINING = {
    k: CFG["nnunet"][k] for k in ("schedule", "quick", "device", "select_best")
}
NNUNET_PREDICTION = {k: CFG["nnunet"][k] for k in ("schedule", "device")}
PROTOCOLS = CFG["prompts"]["protocols"]
# The embed stage's settings: embed.slices for the test cases, what training reads for the others.
EMBED = samstudy_config.embed_settings(CFG)
# Shards (execution.shards): every per-case stage runs one job per shard of a dataset's cases; S is the
# pattern layout of a sharded job (its artifacts under results/shards/{shard}/), gather jobs merge them.
SHARDS = CFG["execution"]["shards"]
SHARD_NAMES = shard_names(SHARDS)
S = L.for_shard("{shard}")
# Scheduling of a local run (--cores N; the greedy scheduler picks ready jobs by priority): every dataset's
# cheap preparation first, so the long jobs are all ready early; then the study's long pole, the embedding
# of the training datasets and the adaptation training that waits for it. Torch jobs declare 1 thread, so
# on a small machine they run side by side instead of waiting for each other's cores (one nnU-Net
# training alone: 56 s with 1 thread, 43 s with 2: two in turn with 2 threads lose to two side by side);
# a profile's set-threads gives them more where a job has its own CPUs (the Slurm profile).
PREPARE_FIRST = 20
LONG_POLE = 10
# The command each stage calls (followed by its verb).
SAMSTUDY = f"samstudy --results {shlex.quote(L.results_dir)} --cache {shlex.quote(L.cache_dir)}"
ENV = "../../envs/samstudy.yaml"


# Every evaluated run: prompt-based methods x protocols (prompts from the ground truth: the oracle arms),
# methods x derived protocols (prompts from another run's predictions: automatic), prompt-free methods,
# then nnU-Net configurations. `prompted` means "prompts from the ground truth"; `prompt_source` says
# where a run's prompts come from: ground_truth, run:<name> or none.
DERIVED = CFG["prompts"]["derived"]
PROMPT_FREE = "promptfree"
RUNS = {}
for _method, _spec in CFG["methods"].items():
    _info = {
        "method": _method,
        "model": _spec["model"],
        "adaptation": _spec["adaptation"],
    }
    if _spec["adaptation"] == PROMPT_FREE:
        RUNS[run_name(_method, "none")] = {
            **_info,
            "protocol": "none",
            "prompted": False,
            "prompt_source": "none",
        }
        continue
    for _protocol in PROTOCOLS:
        if not samstudy_config.runs_protocol(CFG, _method, _protocol):
            continue  # propagate: SAM 2 methods only
        RUNS[run_name(_method, _protocol)] = {
            **_info,
            "protocol": _protocol,
            "prompted": True,
            "prompt_source": "ground_truth",
        }
    for _protocol, _derived in DERIVED.items():
        if not samstudy_config.runs_protocol(CFG, _method, _protocol):
            continue
        RUNS[run_name(_method, _protocol)] = {
            **_info,
            "protocol": _protocol,
            "prompted": False,
            "prompt_source": f"run:{_derived['from']}",
        }
for _run in map(nnunet_run_name, NNUNET_CONFIGS + (["best"] if NNUNET_BEST else [])):
    if NNUNET_DATASETS:
        RUNS[_run] = {
            "method": _run,
            "model": "nnunet",
            "adaptation": "supervised",
            "protocol": "none",
            "prompted": False,
            "prompt_source": "none",
        }
for _run in map(nnunet_prompted_run_name, NNUNET_CONFIGS if NNUNET_PROMPTED else []):
    RUNS[_run] = {
        "method": _run,
        "model": "nnunet",
        "adaptation": "supervised",
        "protocol": "box",
        "prompted": True,
        "prompt_source": "ground_truth",
    }


def nnunet_configs(dataset):
    # nnU-Net plans no 3D configuration for 2D images: on a 2D dataset only its 2d one is trained.
    if readers.is_2d(DATASETS[dataset]):
        return [c for c in NNUNET_CONFIGS if c == "2d"]
    return NNUNET_CONFIGS


def nnunet_runs(dataset):
    if dataset not in NNUNET_DATASETS:
        return []
    configs = nnunet_configs(dataset)
    best = ["best"] if NNUNET_BEST and configs else []
    prompted = [nnunet_prompted_run_name(c) for c in configs] if NNUNET_PROMPTED else []
    return [nnunet_run_name(c) for c in configs + best] + prompted


def evaluated(run, dataset):
    # nnU-Net only where it was trained (configurations it can plan); prompt-free methods on the
    # datasets they were trained on (their classes); derived prompts where their source run is evaluated.
    info = RUNS[run]
    if info["model"] == "nnunet":
        return run in nnunet_runs(dataset)
    if info["adaptation"] == PROMPT_FREE:
        return dataset in TRAIN_DATASETS
    # a derived protocol: where its source run is evaluated (no source run: nowhere)
    if info["protocol"] in DERIVED:
        source = DERIVED[info["protocol"]]["from"]
        return source in RUNS and evaluated(source, dataset)
    return True


# (run, dataset) pairs that are evaluated.
EVAL_PARTS = [(r, d) for r in RUNS for d in DATASETS if evaluated(r, d)]
# (run, dataset) pairs of the `clicks` protocol: also scored after every click (Dice vs clicks).
CLICK_PARTS = [(r, d) for r, d in EVAL_PARTS if RUNS[r]["protocol"] == "clicks"]


def nnunet_dataset_id(dataset):
    return CFG["nnunet"]["dataset_id_start"] + list(DATASETS).index(dataset)


# Input and params functions.


def shard_cases(wildcards):
    # A sharded job's per-case input: its shard's file from the `shard` checkpoint (case ids and their
    # fingerprints), not the whole dataset's files, so after a data change only the shards whose cases
    # changed rerun (Snakemake re-evaluates the jobs after the checkpoint; same file, same checksum).
    checkpoints.shard.get(dataset=wildcards.dataset)
    return L.for_shard(wildcards.shard).shard_cases(wildcards.dataset)


def shard_rows(wildcards):
    # The same, fingerprinting the manifest rows only (raw files' content): for nnU-Net prediction and
    # evaluation, which read the raw data, not the preprocessed slices.
    checkpoints.shard.get(dataset=wildcards.dataset)
    return L.for_shard(wildcards.shard).shard_cases(wildcards.dataset, "rows")


def sharded(path):
    # One path pattern of a sharded job's layout (S), for every shard of the study.
    return [path.replace("{shard}", name) for name in SHARD_NAMES]


RAW_FILES = {}


def raw_files(dataset):
    # Every file a user dataset's ingest reads (listed once per DAG; [] for the built-in datasets,
    # which ingest writes from the config).
    if dataset not in RAW_FILES:
        RAW_FILES[dataset] = readers.dataset_files(DATASETS[dataset])
    return RAW_FILES[dataset]


def ingest_inputs(wildcards):
    # The raw files are inputs: an edited file (newer), an added or a removed one reruns the ingest.
    return {"raw": raw_files(wildcards.dataset)}


def ingest_params(wildcards):
    ds = DATASETS[wildcards.dataset]
    # Only the synthetic phantom depends on the seed (it is generated from it). `files`: the listing's
    # sizes and times, so a file replaced by one with an older time (cp -p, rsync -t) reruns too.
    return P(
        {
            "dataset": ds,
            "seed": CFG["seed"] if ds["format"] == "synthetic" else None,
            "files": readers.fingerprint(raw_files(wildcards.dataset)),
        }
    )


def prompt_settings(protocol):
    # Only what the protocol uses, so changing the jitter does not redo tight boxes.
    keys = {
        "box_jitter": ["jitter_px"],
        "clicks": ["clicks"],
        "box3d": ["box3d"],
    }.get(protocol, ["negative_points"] if protocol.startswith("points") else [])
    return {k: CFG["prompts"][k] for k in ["components", *keys]}


def adapts_encoder(method):
    # LoRA, adapters and full fine-tuning change the encoder: they run it on the preprocessed slices and
    # do not use the base model's cached embeddings.
    return CFG["methods"][method]["adaptation"] in samstudy_config.ENCODER_ADAPTATIONS


def preprocess_params(wildcards):
    # CT datasets use the window, the others the percentiles: each reruns only on its own setting.
    ds = DATASETS[wildcards.dataset]
    unused = "mr_percentiles" if ds["modality"] == "CT" else "ct_window"
    return P(
        {
            "dataset": {k: ds.get(k) for k in ("name", "modality", "window")},
            "preprocess": {k: v for k, v in CFG["preprocess"].items() if k != unused},
        }
    )


def train_inputs(wildcards):
    model = CFG["methods"][wildcards.method]["model"]
    inputs = {
        "preprocessed": [L.preprocessed_dir(d) for d in TRAIN_DATASETS],
        "splits": [L.dataset_splits(d) for d in TRAIN_DATASETS],
    }
    if not adapts_encoder(wildcards.method):
        inputs["embeddings"] = [L.embed_index(model, d) for d in TRAIN_DATASETS]
    return inputs


def infer_inputs(wildcards):
    # One shard of a dataset: its prompts and embeddings (no whole-dataset file; its cases file is a
    # separate input, so that a dry run still sees these jobs before the `shard` checkpoint has run).
    spec = CFG["methods"][wildcards.method]
    shard = L.for_shard(wildcards.shard)
    inputs = {}
    if spec["adaptation"] != PROMPT_FREE:
        inputs["prompts"] = shard.prompts(wildcards.dataset, wildcards.protocol)
    if spec["adaptation"] != "none":
        inputs["checkpoint"] = L.checkpoint(wildcards.method)
    if adapts_encoder(wildcards.method):
        inputs["embeddings"] = shard.adapted_embed_index(
            wildcards.method, wildcards.dataset
        )
    else:
        inputs["embeddings"] = shard.embed_index(spec["model"], wildcards.dataset)
    return inputs


def infer_params(wildcards):
    spec = CFG["methods"][wildcards.method]
    return P(
        {
            "method": spec,
            "model": CFG["models"][spec["model"]],
            "device": CFG["embed"]["device"],
            # prompt-free methods take an argmax over classes: the overlap rule does not apply
            **({} if spec["adaptation"] == PROMPT_FREE else {"infer": CFG["infer"]}),
        }
    )


def nnunet_params(wildcards, *keys):
    return P(
        {
            "dataset_id": nnunet_dataset_id(wildcards.dataset),
            **{k: CFG["nnunet"][k] for k in keys},
        }
    )


def nnunet_trained(dataset, configurations):
    return [
        L.nnunet_train_done(dataset, c, f) for c in configurations for f in NNUNET_FOLDS
    ]


def nnunet_train_inputs(wildcards):
    inputs = [L.nnunet_plan_done(wildcards.dataset)]
    if wildcards.configuration == "3d_cascade_fullres":
        # its training cases' first-stage segmentations come from the 3d_lowres cross-validation
        inputs += nnunet_trained(wildcards.dataset, ["3d_lowres"])
    return inputs


# The prompted nnU-Net (workflow/rules/nnunet_prompted.smk).
def nnunet_prompted_dataset_id(dataset):
    # its own nnU-Net dataset id: the plain one + 100 (nnU-Net ids have three digits: - 100 above 899)
    plain = nnunet_dataset_id(dataset)
    return plain + 100 if plain + 100 <= 999 else plain - 100


def nnunet_prompted_params(wildcards, *keys, **extra):
    return P(
        {
            "dataset_id": nnunet_prompted_dataset_id(wildcards.dataset),
            "prompted": True,
            **{k: CFG["nnunet"][k] for k in keys},
            **extra,
        }
    )


def nnunet_prompted_trained(dataset, configurations):
    return [
        L.nnunet_prompted_train_done(dataset, c, f)
        for c in configurations
        for f in NNUNET_FOLDS
    ]


def nnunet_prompted_train_inputs(wildcards):
    inputs = [L.nnunet_prompted_plan_done(wildcards.dataset)]
    if wildcards.configuration == "3d_cascade_fullres":
        inputs += nnunet_prompted_trained(wildcards.dataset, ["3d_lowres"])
    return inputs


# The shards' per-case artifacts gathered at their documented places for every dataset (the embedding
# index of each base model, the prompts of each protocol), beside the predictions and metrics.
GATHERED = sorted(
    {
        L.embed_index(CFG["methods"][RUNS[r]["method"]]["model"], d)
        for r, d in EVAL_PARTS
        if RUNS[r]["model"] != "nnunet" and not adapts_encoder(RUNS[r]["method"])
    }
    | {
        L.prompts(d, RUNS[r]["protocol"])
        for r, d in EVAL_PARTS
        if RUNS[r]["model"] != "nnunet" and RUNS[r]["protocol"] != "none"
    }
)
