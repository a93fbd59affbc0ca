# Prompts: simulated from the ground truth once per dataset and protocol, reused by every method.


rule prompts:
    input:
        L.preprocessed_dir("{dataset}"),
    output:
        L.prompts("{dataset}", "{protocol}"),
    log:
        L.log("prompts/{dataset}.{protocol}"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w: P({"prompts": prompt_settings(w.protocol), "seed": CFG["seed"]}),
    shell:
        "{params.cli} prompts --dataset {wildcards.dataset} --protocol {wildcards.protocol}"
        " --params {params.p:q} > {log} 2>&1"
