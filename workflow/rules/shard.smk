# Shards: each dataset's cases split into execution.shards groups by a hash of the case id (adding a case
# moves no other). A checkpoint, so that after it has run Snakemake decides again which sharded jobs are
# out of date: a shard whose file kept its bytes (checksum) does not rerun (samstudy/shards.py).


checkpoint shard:
    input:
        table=L.ingest_table("{dataset}"),
        info=L.ingest_info("{dataset}"),
        split=L.dataset_splits("{dataset}"),
        preprocessed=L.preprocessed_dir("{dataset}"),
    output:
        sharded(S.shard_cases("{dataset}")),
        sharded(S.shard_cases("{dataset}", "rows")),
    log:
        L.log("shard/{dataset}"),
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=SHARDS_PARAMS,
    shell:
        "{params.cli} shard --dataset {wildcards.dataset} --params {params.p:q} > {log} 2>&1"
