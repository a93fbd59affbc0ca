# Zero-shot and adapted inference: one job per method, protocol and dataset.


rule infer:
    input:
        unpack(infer_inputs),
    output:
        directory(L.prediction_dir(run_name("{method}", "{protocol}"), "{dataset}")),
    log:
        L.log("infer/{method}.{protocol}.{dataset}"),
    benchmark:
        L.benchmark("infer.{method}.{protocol}.{dataset}")
    conda:
        ENV
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        cli=SAMSTUDY,
        p=infer_params,
    shell:
        "{params.cli} infer --dataset {wildcards.dataset} --method {wildcards.method}"
        " --protocol {wildcards.protocol} --params {params.p:q} > {log} 2>&1"
