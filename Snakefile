# samstudy: SAM and its medical adaptations against nnU-Net v2, one reproducible study.
# This file only loads and validates the config, includes one rule file per stage and names the targets.
from snakemake.utils import min_version, validate

from samstudy.config import remove_nulls, schema_path

min_version("9.0")


configfile: "config/config.yaml"


# A null in a --configfile removes what it names from the default study (config/README.md).
remove_nulls(config)
# The schema ships inside the samstudy package (workflow/schemas/config.schema.yaml links to it).
validate(config, schema_path())


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="[A-Za-z][A-Za-z0-9_]*",
    method="[A-Za-z][A-Za-z0-9_]*",
    model="[A-Za-z][A-Za-z0-9_]*",
    protocol="[A-Za-z][A-Za-z0-9_]*",
    configuration="2d|3d_fullres|3d_lowres|3d_cascade_fullres",
    fold="[0-9]+",
    run="[A-Za-z][A-Za-z0-9_.]*",
    shard="[0-9]+of[0-9]+",


include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/shard.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/nnunet.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        L.report(),
        L.summary(),
        GATHERED,
