# Preprocess: CT windowing / MR percentile clipping, 2D slices along the chosen axis.


rule preprocess:
    input:
        table=L.ingest_table("{dataset}"),
        info=L.ingest_info("{dataset}"),
    output:
        directory(L.preprocessed_dir("{dataset}")),
    log:
        L.log("preprocess/{dataset}"),
    benchmark:
        L.benchmark("preprocess.{dataset}")
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.preprocess_params(w.dataset)),
    shell:
        "{params.cli} preprocess --params {params.p:q} > {log} 2>&1"
