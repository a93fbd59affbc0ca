# Ingest: read + validate each dataset; manifest; patient-level splits.


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        table=L.ingest_table("{dataset}"),
        rejected=L.ingest_rejected("{dataset}"),
        info=L.ingest_info("{dataset}"),
    log:
        L.log("ingest/{dataset}"),
    benchmark:
        L.benchmark("ingest.{dataset}")
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=ingest_params,
    shell:
        "{params.cli} ingest --params {params.p:q} > {log} 2>&1"


rule manifest:
    input:
        expand(L.ingest_table("{dataset}"), dataset=DATASETS),
    output:
        manifest=L.manifest(),
        rejected=L.rejected(),
    log:
        L.log("manifest"),
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=P(STUDY.datasets_params()),
    shell:
        "{params.cli} manifest --params {params.p:q} > {log} 2>&1"


rule split:
    input:
        L.ingest_table("{dataset}"),
    output:
        split=L.dataset_splits("{dataset}"),
        nnunet=L.nnunet_splits("{dataset}"),
    log:
        L.log("split/{dataset}"),
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.split_params(w.dataset)),
    shell:
        "{params.cli} split --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule splits:
    input:
        expand(L.dataset_splits("{dataset}"), dataset=DATASETS),
    output:
        L.splits(),
    log:
        L.log("splits"),
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=P(STUDY.datasets_params()),
    shell:
        "{params.cli} splits --params {params.p:q} > {log} 2>&1"
