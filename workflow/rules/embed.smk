# Embed: the image encoder once per needed slice, cached by content (the GPU stage). One job per shard of
# a dataset's cases (execution.shards); `gather_embed` merges the shards' indexes for training.
# threads: torch's threads in the job (1: locally, shards run side by side; a profile's set-threads
# raises it where a job has more cores, e.g. a GPU job's CPUs for the input transform).


rule embed:
    input:
        cases=shard_cases,
    output:
        S.embed_index("{model}", "{dataset}"),
    log:
        L.log("embed/{model}.{dataset}.{shard}"),
    benchmark:
        L.benchmark("embed.{model}.{dataset}.{shard}")
    priority: LONG_POLE
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.embed_params(w.model)),
    shell:
        "{params.cli} --shard {wildcards.shard} embed --dataset {wildcards.dataset} --model {wildcards.model}"
        " --threads {threads} --params {params.p:q} > {log} 2>&1"


rule gather_embed:
    input:
        shards=sharded(S.embed_index("{model}", "{dataset}")),
        table=L.ingest_table("{dataset}"),
    output:
        L.embed_index("{model}", "{dataset}"),
    log:
        L.log("embed/{model}.{dataset}.gather"),
    priority: LONG_POLE
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=SHARDS_PARAMS,
    shell:
        "{params.cli} gather embed --dataset {wildcards.dataset} --name {wildcards.model}"
        " --params {params.p:q} > {log} 2>&1"


# Methods that adapt the encoder (lora, adapter, full): their own embeddings of the test cases, once.
rule embed_adapted:
    input:
        checkpoint=L.checkpoint("{method}"),
        cases=shard_cases,
    output:
        S.adapted_embed_index("{method}", "{dataset}"),
    log:
        L.log("embed/adapted.{method}.{dataset}.{shard}"),
    benchmark:
        L.benchmark("embed_adapted.{method}.{dataset}.{shard}")
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=240,
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.embed_adapted_params(w.method)),
    shell:
        "{params.cli} --shard {wildcards.shard} embed_adapted --dataset {wildcards.dataset}"
        " --method {wildcards.method} --threads {threads} --params {params.p:q} > {log} 2>&1"
