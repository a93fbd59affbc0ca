# Adaptation training from cached embeddings, on the training datasets' training split.


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
    priority: LONG_POLE
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=480,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.train_params(w.method)),
    shell:
        "{params.cli} train --method {wildcards.method} --threads {threads} --params {params.p:q} > {log} 2>&1"
