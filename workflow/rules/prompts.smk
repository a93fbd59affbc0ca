# Prompts: simulated from the ground truth once per dataset and protocol, reused by every method.


def prompt_settings(protocol):
    # Only what the protocol uses, so changing the jitter does not redo tight boxes.
    keys = {"box_jitter": ["jitter_px"]}.get(protocol, [])
    return {k: CFG["prompts"][k] for k in keys}


rule prompts:
    input:
        L.preprocessed_dir("{dataset}"),
    output:
        L.prompts("{dataset}", "{protocol}"),
    log:
        L.log("prompts/{dataset}.{protocol}"),
    params:
        p=lambda w: P({"prompts": prompt_settings(w.protocol), "seed": CFG["seed"]}),
    conda:
        ENV
    shell:
        "{SAMSTUDY} prompts --dataset {wildcards.dataset} --protocol {wildcards.protocol}"
        " --params {params.p:q} > {log} 2>&1"
