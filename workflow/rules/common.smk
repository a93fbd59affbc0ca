# Shared by all stages: the validated config, the one path layout, the study table (samstudy.study, where
# the runs, the datasets they are scored on, nnU-Net's variants and each rule's params are computed and
# tested). What stays here is Snakemake glue: input functions that need the `shard` checkpoint, the raw
# file listing, and the wrapping of study-table functions into params and input functions.
import shlex

from samstudy import config as samstudy_config
from samstudy import readers
from samstudy.paths import NNUNET_PROMPT_PROTOCOL, run_name
from samstudy.study import NNUNET_PLAIN, NNUNET_VARIANTS, Study, check_checkpoints

CFG = samstudy_config.validate(config)
# Config errors the study table can see stop the study here, before any job runs: a dataset path or a
# model checkpoint that does not exist, a method that trains with no dataset to train on (Study).
samstudy_config.check_paths(CFG)
check_checkpoints(CFG)
STUDY = Study(CFG)
P = samstudy_config.as_param
L = STUDY.layout
DATASETS = STUDY.datasets
DERIVED = STUDY.derived
PROTOCOLS = STUDY.protocols
EVAL_PARTS = STUDY.eval_parts
CLICK_PARTS = STUDY.click_parts
GATHERED = STUDY.gathered()
# Shards (execution.shards): every per-case stage runs one job per shard of a dataset's cases; S is the
# pattern layout of a sharded job (its artifacts under results/shards/{shard}/), gather jobs merge them.
S = L.for_shard("{shard}")
SHARDS_PARAMS = P(STUDY.shards_params())
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
    return [path.replace("{shard}", name) for name in STUDY.shard_names]


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
    return P(
        STUDY.ingest_params(
            wildcards.dataset, readers.fingerprint(raw_files(wildcards.dataset))
        )
    )


def train_inputs(wildcards):
    return STUDY.train_inputs(wildcards.method)


def infer_inputs(wildcards):
    # One shard of a dataset: its prompts and embeddings (no whole-dataset file; its cases file is a
    # separate input, so that a dry run still sees these jobs before the `shard` checkpoint has run).
    w = wildcards
    return STUDY.infer_inputs(w.method, w.dataset, w.protocol, w.shard)


def nnunet_params(step, variant):
    # The params function of one nnU-Net step of a variant (a closure: the rules are made in a loop).
    return lambda wildcards: P(STUDY.nnunet_params(step, variant, wildcards.dataset))


def nnunet_train_inputs(variant):
    return lambda wildcards: STUDY.nnunet_train_inputs(
        wildcards.dataset, wildcards.configuration, variant
    )


def nnunet_trained(variant):
    # The train stamps a prediction of one configuration waits for (every fold).
    return lambda wildcards: STUDY.nnunet_trained(
        wildcards.dataset, [wildcards.configuration], variant
    )
