# Adaptation training from cached embeddings, on the training datasets' training split.


def train_inputs(wildcards):
    model = CFG["methods"][wildcards.method]["model"]
    return {
        "embeddings": [L.embed_index(model, d) for d in TRAIN_DATASETS],
        "preprocessed": [L.preprocessed_dir(d) for d in TRAIN_DATASETS],
        "splits": [L.dataset_splits(d) for d in TRAIN_DATASETS],
    }


rule train:
    input:
        unpack(train_inputs),
    output:
        checkpoint=L.checkpoint("{method}"),
        curves=L.curves("{method}"),
    log:
        L.log("train/{method}"),
    benchmark:
        L.benchmark("train.{method}")
    params:
        p=lambda w: P(
            {
                "method": CFG["methods"][w.method],
                "model": CFG["models"][CFG["methods"][w.method]["model"]],
                "datasets": TRAIN_DATASETS,
                "train": CFG["train"],
                "seed": CFG["seed"],
            }
        ),
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=480,
    conda:
        ENV
    shell:
        "{SAMSTUDY} train --method {wildcards.method} --params {params.p:q} > {log} 2>&1"
