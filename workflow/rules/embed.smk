# Embed: the image encoder once per needed slice, cached by content (the GPU stage).


rule embed:
    input:
        L.preprocessed_dir("{dataset}"),
    output:
        L.embed_index("{model}", "{dataset}"),
    log:
        L.log("embed/{model}.{dataset}"),
    benchmark:
        L.benchmark("embed.{model}.{dataset}")
    conda:
        ENV
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: P({"model": CFG["models"][w.model], "embed": CFG["embed"]}),
    shell:
        "{params.cli} embed --dataset {wildcards.dataset} --model {wildcards.model}"
        " --params {params.p:q} > {log} 2>&1"


# Methods that adapt the encoder (lora, adapter, full): their own embeddings of the test cases, once.
rule embed_adapted:
    input:
        checkpoint=L.checkpoint("{method}"),
        preprocessed=L.preprocessed_dir("{dataset}"),
        split=L.dataset_splits("{dataset}"),
    output:
        L.adapted_embed_index("{method}", "{dataset}"),
    log:
        L.log("embed/adapted.{method}.{dataset}"),
    benchmark:
        L.benchmark("embed_adapted.{method}.{dataset}")
    conda:
        ENV
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(
            {
                "method": CFG["methods"][w.method],
                "model": CFG["models"][CFG["methods"][w.method]["model"]],
                "embed": CFG["embed"],
            }
        ),
    shell:
        "{params.cli} embed_adapted --dataset {wildcards.dataset} --method {wildcards.method}"
        " --params {params.p:q} > {log} 2>&1"
