# Prompted nnU-Net (nnunet.prompted): nnU-Net given each label's box as extra input channels, the oracle
# counterpart of box-prompted SAM, through nnunetv2 itself: its own nnU-Net dataset (<dataset>_prompted),
# the study's folds, export -> plan/preprocess -> train -> predict as the plain nnU-Net. Training cases get
# the ground-truth boxes jittered as SAM's adaptation training (train.jitter_px, seeded); the test cases get
# the stored `box` prompts at prediction time, so new prompts rerun only the prediction.


rule nnunet_prompted_export:
    input:
        table=L.ingest_table("{dataset}"),
        split=L.dataset_splits("{dataset}"),
        preprocessed=L.preprocessed_dir("{dataset}"),
    output:
        L.nnunet_prompted_export_done("{dataset}"),
    log:
        L.log("nnunet/export.{dataset}.prompted"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: nnunet_prompted_params(
            w, jitter_px=CFG["train"]["jitter_px"], seed=CFG["seed"]
        ),
    shell:
        "{params.cli} nnunet export --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_prompted_plan:
    input:
        L.nnunet_prompted_export_done("{dataset}"),
    output:
        L.nnunet_prompted_plan_done("{dataset}"),
    log:
        L.log("nnunet/plan.{dataset}.prompted"),
    benchmark:
        L.benchmark("nnunet_plan.{dataset}.prompted")
    conda:
        ENV
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: nnunet_prompted_params(w, "configurations", "schedule"),
    shell:
        "{params.cli} nnunet plan --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_prompted_train:
    input:
        nnunet_prompted_train_inputs,
    output:
        L.nnunet_prompted_train_done("{dataset}", "{configuration}", "{fold}"),
    log:
        L.log("nnunet/train.{dataset}.prompted.{configuration}.fold{fold}"),
    benchmark:
        L.benchmark("nnunet_train.{dataset}.prompted.{configuration}.fold{fold}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=2880,
    params:
        cli=SAMSTUDY,
        p=lambda w: nnunet_prompted_params(w, nnunet=NNUNET_TRAINING, seed=CFG["seed"]),
    shell:
        "{params.cli} nnunet train --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
        " --fold {wildcards.fold} --threads {threads} --params {params.p:q} > {log} 2>&1"


rule nnunet_prompted_predict:
    input:
        trained=lambda w: nnunet_prompted_trained(w.dataset, [w.configuration]),
        # the test cases' box channels: the very boxes box-prompted SAM gets
        prompts=S.prompts("{dataset}", "box"),
        cases=shard_cases,
    output:
        directory(S.prediction_dir("nnunet_prompted_{configuration}", "{dataset}")),
    log:
        L.log("nnunet/predict.{dataset}.prompted.{configuration}.{shard}"),
    benchmark:
        L.benchmark("nnunet_predict.{dataset}.prompted.{configuration}.{shard}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        cli=SAMSTUDY,
        p=lambda w: nnunet_prompted_params(
            w, nnunet=NNUNET_PREDICTION, folds=NNUNET_FOLDS
        ),
    shell:
        "{params.cli} --shard {wildcards.shard} nnunet predict --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
        " --threads {threads} --params {params.p:q} > {log} 2>&1"
