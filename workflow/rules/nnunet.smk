# nnU-Net v2 baseline through nnunetv2 itself: export -> plan/preprocess -> train -> predict, once per
# variant of the study table (samstudy.study.NNUNET_VARIANTS), the same rules for each:
# - plain (rules nnunet_*): the dataset as it is; plus nnU-Net's own model choice (select, predict_best);
# - prompted (rules nnunet_prompted_*, nnunet.prompted): nnU-Net given each label's box as extra input
#   channels, the oracle counterpart of box-prompted SAM: its own nnU-Net dataset (<dataset>_prompted), the
#   study's folds. Training cases get the ground-truth boxes jittered as SAM's adaptation training
#   (train.jitter_px, seeded); the test cases get the stored `box` prompts at prediction time, so new
#   prompts rerun only the prediction.
# Each variant's stamps, logs and benchmarks carry its tag (".prompted") after the dataset.
for V in NNUNET_VARIANTS:

    rule:
        name:
            f"{V.rule}_export"
        input:
            table=L.ingest_table("{dataset}"),
            split=L.dataset_splits("{dataset}"),
            # the prompted export jitters the training cases' boxes on the preprocessed slices
            preprocessed=L.preprocessed_dir("{dataset}") if V.prompted else [],
        output:
            L.nnunet_export_done("{dataset}", V.prompted),
        log:
            L.log(f"nnunet/export.{{dataset}}{V.tag}"),
        conda:
            ENV
        params:
            cli=SAMSTUDY,
            p=nnunet_params("export", V),
        shell:
            "{params.cli} nnunet export --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"

    rule:
        name:
            f"{V.rule}_plan"
        input:
            L.nnunet_export_done("{dataset}", V.prompted),
        output:
            L.nnunet_plan_done("{dataset}", V.prompted),
        log:
            L.log(f"nnunet/plan.{{dataset}}{V.tag}"),
        benchmark:
            L.benchmark(f"nnunet_plan.{{dataset}}{V.tag}")
        conda:
            ENV
        resources:
            mem_mb=16000,
            runtime=240,
        params:
            cli=SAMSTUDY,
            p=nnunet_params("plan", V),
        shell:
            "{params.cli} nnunet plan --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"

    rule:
        name:
            f"{V.rule}_train"
        input:
            nnunet_train_inputs(V),
        output:
            L.nnunet_train_done("{dataset}", "{configuration}", "{fold}", V.prompted),
        log:
            L.log(f"nnunet/train.{{dataset}}{V.tag}.{{configuration}}.fold{{fold}}"),
        benchmark:
            L.benchmark(
                f"nnunet_train.{{dataset}}{V.tag}.{{configuration}}.fold{{fold}}"
            )
        conda:
            ENV
        threads: 1
        resources:
            gpu=1,
            mem_mb=32000,
            runtime=2880,
        params:
            cli=SAMSTUDY,
            p=nnunet_params("train", V),
        shell:
            "{params.cli} nnunet train --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
            " --fold {wildcards.fold} --threads {threads} --params {params.p:q} > {log} 2>&1"

    rule:
        name:
            f"{V.rule}_predict"
        input:
            trained=nnunet_trained(V),
            # prompted: the test cases' box channels, the very boxes box-prompted SAM gets
            prompts=S.prompts("{dataset}", NNUNET_PROMPT_PROTOCOL) if V.prompted else [],
            # the prompted prediction reads the preprocessed slices' boxes, the plain one the raw data
            cases=shard_cases if V.prompted else shard_rows,
        output:
            directory(S.prediction_dir(V.run_name("{configuration}"), "{dataset}")),
        log:
            L.log(f"nnunet/predict.{{dataset}}{V.tag}.{{configuration}}.{{shard}}"),
        benchmark:
            L.benchmark(
                f"nnunet_predict.{{dataset}}{V.tag}.{{configuration}}.{{shard}}"
            )
        conda:
            ENV
        threads: 1
        resources:
            gpu=1,
            mem_mb=16000,
            runtime=120,
        params:
            cli=SAMSTUDY,
            p=nnunet_params("predict", V),
        shell:
            "{params.cli} --shard {wildcards.shard} nnunet predict --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
            " --threads {threads} --params {params.p:q} > {log} 2>&1"


# nnU-Net's own model choice: find_best_configuration on the cross-validation of the trained folds.
rule nnunet_select:
    input:
        lambda w: STUDY.nnunet_trained(w.dataset, STUDY.nnunet_configs(w.dataset)),
    output:
        L.nnunet_best_done("{dataset}"),
    log:
        L.log("nnunet/select.{dataset}"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.nnunet_select_params(w.dataset)),
    shell:
        "{params.cli} nnunet select --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_predict_best:
    input:
        best=L.nnunet_best_done("{dataset}"),
        cases=shard_rows,
    output:
        directory(S.prediction_dir(NNUNET_PLAIN.run_name("best"), "{dataset}")),
    log:
        L.log("nnunet/predict.{dataset}.best.{shard}"),
    benchmark:
        L.benchmark("nnunet_predict.{dataset}.best.{shard}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.nnunet_predict_best_params(w.dataset)),
    shell:
        "{params.cli} --shard {wildcards.shard} nnunet predict_best --dataset {wildcards.dataset} --threads {threads} --params {params.p:q} > {log} 2>&1"
