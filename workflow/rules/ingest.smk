# Ingest: read + validate each dataset; manifest; patient-level splits.


def ingest_params(wildcards):
    ds = DATASETS[wildcards.dataset]
    # Only the synthetic phantom depends on the seed (it is generated from it).
    return P({"dataset": ds, "seed": CFG["seed"] if ds["format"] == "synthetic" else None})


rule ingest:
    output:
        table=L.ingest_table("{dataset}"),
        rejected=L.ingest_rejected("{dataset}"),
        info=L.ingest_info("{dataset}"),
    log:
        L.log("ingest/{dataset}"),
    benchmark:
        L.benchmark("ingest.{dataset}")
    params:
        p=ingest_params,
    conda:
        ENV
    shell:
        "{SAMSTUDY} ingest --params {params.p:q} > {log} 2>&1"


rule manifest:
    input:
        expand(L.ingest_table("{dataset}"), dataset=DATASETS),
    output:
        manifest=L.manifest(),
        rejected=L.rejected(),
    log:
        L.log("manifest"),
    params:
        p=P({"datasets": list(DATASETS)}),
    conda:
        ENV
    shell:
        "{SAMSTUDY} manifest --params {params.p:q} > {log} 2>&1"


rule split:
    input:
        L.ingest_table("{dataset}"),
    output:
        split=L.dataset_splits("{dataset}"),
        nnunet=L.nnunet_splits("{dataset}"),
    log:
        L.log("split/{dataset}"),
    params:
        p=lambda w: P(
            {
                "role": DATASETS[w.dataset]["role"],
                "seed": CFG["seed"],
                "splits": CFG["splits"],
            }
        ),
    conda:
        ENV
    shell:
        "{SAMSTUDY} split --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"


rule splits:
    input:
        expand(L.dataset_splits("{dataset}"), dataset=DATASETS),
    output:
        L.splits(),
    log:
        L.log("splits"),
    params:
        p=P({"datasets": list(DATASETS)}),
    conda:
        ENV
    shell:
        "{SAMSTUDY} splits --params {params.p:q} > {log} 2>&1"
