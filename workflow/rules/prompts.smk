# Prompts: simulated from the ground truth once per dataset, protocol and shard, reused by every method;
# derived (automatic) protocols are made from their source run's predictions of the test cases.


rule prompts:
    input:
        cases=shard_cases,
    output:
        S.prompts("{dataset}", "{protocol}"),
    log:
        L.log("prompts/{dataset}.{protocol}.{shard}"),
    wildcard_constraints:
        protocol="|".join(PROTOCOLS),
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.prompts_params(w.protocol)),
    shell:
        "{params.cli} --shard {wildcards.shard} prompts --dataset {wildcards.dataset} --protocol {wildcards.protocol}"
        " --params {params.p:q} > {log} 2>&1"


rule derived_prompts:
    input:
        predictions=lambda w: L.for_shard(w.shard).prediction_dir(
            DERIVED[w.protocol]["from"], w.dataset
        ),
        cases=shard_cases,
    output:
        S.prompts("{dataset}", "{protocol}"),
    log:
        L.log("prompts/{dataset}.{protocol}.{shard}"),
    wildcard_constraints:
        protocol="|".join(DERIVED) or "^$",
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.derived_prompts_params(w.protocol)),
    shell:
        "{params.cli} --shard {wildcards.shard} prompts --dataset {wildcards.dataset} --protocol {wildcards.protocol}"
        " --params {params.p:q} > {log} 2>&1"


rule gather_prompts:
    input:
        shards=sharded(S.prompts("{dataset}", "{protocol}")),
        table=L.ingest_table("{dataset}"),
        split=L.dataset_splits("{dataset}"),
    output:
        L.prompts("{dataset}", "{protocol}"),
    log:
        L.log("prompts/{dataset}.{protocol}.gather"),
    priority: PREPARE_FIRST
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=SHARDS_PARAMS,
    shell:
        "{params.cli} gather prompts --dataset {wildcards.dataset} --name {wildcards.protocol}"
        " --params {params.p:q} > {log} 2>&1"
