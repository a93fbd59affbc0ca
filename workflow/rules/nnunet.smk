# nnU-Net v2 baseline through nnunetv2 itself: export -> plan/preprocess -> train -> predict.


rule nnunet_export:
    input:
        table=L.ingest_table("{dataset}"),
        split=L.dataset_splits("{dataset}"),
    output:
        L.nnunet_export_done("{dataset}"),
    log:
        L.log("nnunet/export.{dataset}"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: nnunet_params(w),
    shell:
        "{params.cli} nnunet export --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_plan:
    input:
        L.nnunet_export_done("{dataset}"),
    output:
        L.nnunet_plan_done("{dataset}"),
    log:
        L.log("nnunet/plan.{dataset}"),
    benchmark:
        L.benchmark("nnunet_plan.{dataset}")
    conda:
        ENV
    resources:
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: nnunet_params(w, "configurations", "schedule"),
    shell:
        "{params.cli} nnunet plan --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_train:
    input:
        nnunet_train_inputs,
    output:
        L.nnunet_train_done("{dataset}", "{configuration}", "{fold}"),
    log:
        L.log("nnunet/train.{dataset}.{configuration}.fold{fold}"),
    benchmark:
        L.benchmark("nnunet_train.{dataset}.{configuration}.fold{fold}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=2880,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(
            {
                "dataset_id": nnunet_dataset_id(w.dataset),
                "nnunet": NNUNET_TRAINING,
                "seed": CFG["seed"],
            }
        ),
    shell:
        "{params.cli} nnunet train --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
        " --fold {wildcards.fold} --threads {threads} --params {params.p:q} > {log} 2>&1"


rule nnunet_predict:
    input:
        trained=lambda w: nnunet_trained(w.dataset, [w.configuration]),
        cases=shard_rows,
    output:
        directory(S.prediction_dir("nnunet_{configuration}", "{dataset}")),
    log:
        L.log("nnunet/predict.{dataset}.{configuration}.{shard}"),
    benchmark:
        L.benchmark("nnunet_predict.{dataset}.{configuration}.{shard}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(
            {
                "dataset_id": nnunet_dataset_id(w.dataset),
                "nnunet": NNUNET_PREDICTION,
                "folds": NNUNET_FOLDS,
            }
        ),
    shell:
        "{params.cli} --shard {wildcards.shard} nnunet predict --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
        " --threads {threads} --params {params.p:q} > {log} 2>&1"


# nnU-Net's own model choice: find_best_configuration on the cross-validation of the trained folds.
rule nnunet_select:
    input:
        lambda w: nnunet_trained(w.dataset, nnunet_configs(w.dataset)),
    output:
        L.nnunet_best_done("{dataset}"),
    log:
        L.log("nnunet/select.{dataset}"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P(
            {
                "dataset_id": nnunet_dataset_id(w.dataset),
                "configurations": nnunet_configs(w.dataset),
                "folds": NNUNET_FOLDS,
            }
        ),
    shell:
        "{params.cli} nnunet select --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_predict_best:
    input:
        best=L.nnunet_best_done("{dataset}"),
        cases=shard_rows,
    output:
        directory(S.prediction_dir("nnunet_best", "{dataset}")),
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
        p=lambda w: P(
            {
                "dataset_id": nnunet_dataset_id(w.dataset),
                "nnunet": NNUNET_PREDICTION,
                "folds": NNUNET_FOLDS,
            }
        ),
    shell:
        "{params.cli} --shard {wildcards.shard} nnunet predict_best --dataset {wildcards.dataset} --threads {threads} --params {params.p:q} > {log} 2>&1"
