# Zero-shot and adapted inference: one job per method, protocol and dataset.


def infer_inputs(wildcards):
    spec = CFG["methods"][wildcards.method]
    inputs = {
        "embeddings": L.embed_index(spec["model"], wildcards.dataset),
        "prompts": L.prompts(wildcards.dataset, wildcards.protocol),
        "preprocessed": L.preprocessed_dir(wildcards.dataset),
        "split": L.dataset_splits(wildcards.dataset),
    }
    if spec["adaptation"] != "none":
        inputs["checkpoint"] = L.checkpoint(wildcards.method)
    return inputs


rule infer:
    input:
        unpack(infer_inputs),
    output:
        directory(L.prediction_dir(run_name("{method}", "{protocol}"), "{dataset}")),
    log:
        L.log("infer/{method}.{protocol}.{dataset}"),
    benchmark:
        L.benchmark("infer.{method}.{protocol}.{dataset}")
    params:
        p=lambda w: P(
            {
                "method": CFG["methods"][w.method],
                "model": CFG["models"][CFG["methods"][w.method]["model"]],
                "device": CFG["embed"]["device"],
            }
        ),
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    shell:
        "{SAMSTUDY} infer --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol {wildcards.protocol} --params {params.p:q} > {log} 2>&1"
