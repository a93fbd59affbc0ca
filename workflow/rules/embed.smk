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
