# nnU-Net v2 baseline through nnunetv2 itself: export -> plan/preprocess -> train -> predict.


def nnunet_params(wildcards, *keys):
    return P({"dataset_id": nnunet_dataset_id(wildcards.dataset), **{k: CFG["nnunet"][k] for k in keys}})


rule nnunet_export:
    input:
        table=L.ingest_table("{dataset}"),
        split=L.dataset_splits("{dataset}"),
    output:
        L.nnunet_export_done("{dataset}"),
    log:
        L.log("nnunet/export.{dataset}"),
    params:
        p=lambda w: nnunet_params(w),
    conda:
        ENV
    shell:
        "{SAMSTUDY} nnunet export --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_plan:
    input:
        L.nnunet_export_done("{dataset}"),
    output:
        L.nnunet_plan_done("{dataset}"),
    log:
        L.log("nnunet/plan.{dataset}"),
    benchmark:
        L.benchmark("nnunet_plan.{dataset}")
    params:
        p=lambda w: nnunet_params(w, "configurations", "schedule"),
    resources:
        mem_mb=16000,
        runtime=240,
    conda:
        ENV
    shell:
        "{SAMSTUDY} nnunet plan --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule nnunet_train:
    input:
        L.nnunet_plan_done("{dataset}"),
    output:
        L.nnunet_train_done("{dataset}", "{configuration}"),
    log:
        L.log("nnunet/train.{dataset}.{configuration}"),
    benchmark:
        L.benchmark("nnunet_train.{dataset}.{configuration}")
    params:
        p=lambda w: P(
            {
                "dataset_id": nnunet_dataset_id(w.dataset),
                "nnunet": CFG["nnunet"],
                "seed": CFG["seed"],
            }
        ),
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=2880,
    conda:
        ENV
    shell:
        "{SAMSTUDY} nnunet train --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
        " --params {params.p:q} > {log} 2>&1"


rule nnunet_predict:
    input:
        L.nnunet_train_done("{dataset}", "{configuration}"),
    output:
        directory(L.prediction_dir("nnunet_{configuration}", "{dataset}")),
    log:
        L.log("nnunet/predict.{dataset}.{configuration}"),
    benchmark:
        L.benchmark("nnunet_predict.{dataset}.{configuration}")
    params:
        p=lambda w: P({"dataset_id": nnunet_dataset_id(w.dataset), "nnunet": CFG["nnunet"]}),
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    conda:
        ENV
    shell:
        "{SAMSTUDY} nnunet predict --dataset {wildcards.dataset} --configuration {wildcards.configuration}"
        " --params {params.p:q} > {log} 2>&1"
