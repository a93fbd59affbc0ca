# Zero-shot and adapted inference: one job per method, protocol, dataset and shard of its test cases.


rule infer:
    input:
        unpack(infer_inputs),
        cases=shard_cases,
    output:
        directory(S.prediction_dir(run_name("{method}", "{protocol}"), "{dataset}")),
    log:
        L.log("infer/{method}.{protocol}.{dataset}.{shard}"),
    benchmark:
        L.benchmark("infer.{method}.{protocol}.{dataset}.{shard}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.infer_params(w.method)),
    shell:
        "{params.cli} --shard {wildcards.shard} infer --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol {wildcards.protocol} --threads {threads} --params {params.p:q} > {log} 2>&1"
