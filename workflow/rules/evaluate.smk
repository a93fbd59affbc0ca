# Evaluate every run with the same metric code (clicks runs also after every click), one job per shard;
# gather_run merges a run's shards (predictions folder + metrics), summarize merges the runs into
# metrics.parquet, dice_vs_clicks.parquet and summary.json. An evaluate job scores its cases in up to
# `threads` processes (Snakemake lowers it to --cores; on Slurm it is the job's cpus_per_task).


rule evaluate:
    input:
        predictions=S.prediction_dir("{run}", "{dataset}"),
        cases=shard_rows,
    output:
        S.run_metrics("{run}", "{dataset}"),
    log:
        L.log("evaluate/{run}.{dataset}.{shard}"),
    benchmark:
        L.benchmark("evaluate.{run}.{dataset}.{shard}")
    conda:
        ENV
    threads: 4
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.evaluate_params(w.run)),
    shell:
        "{params.cli} --shard {wildcards.shard} evaluate --dataset {wildcards.dataset} --run {wildcards.run} --threads {threads}"
        " --params {params.p:q} > {log} 2>&1"


rule evaluate_clicks:
    input:
        predictions=S.prediction_dir("{run}", "{dataset}"),
        cases=shard_rows,
    output:
        S.run_click_metrics("{run}", "{dataset}"),
    log:
        L.log("evaluate/{run}.{dataset}.clicks.{shard}"),
    benchmark:
        L.benchmark("evaluate_clicks.{run}.{dataset}.{shard}")
    conda:
        ENV
    threads: 4
    params:
        cli=SAMSTUDY,
        p=lambda w: P(STUDY.evaluate_params(w.run)),
    shell:
        "{params.cli} --shard {wildcards.shard} evaluate_clicks --dataset {wildcards.dataset} --run {wildcards.run} --threads {threads}"
        " --params {params.p:q} > {log} 2>&1"


rule gather_run:
    input:
        predictions=sharded(S.prediction_dir("{run}", "{dataset}")),
        metrics=sharded(S.run_metrics("{run}", "{dataset}")),
        split=L.dataset_splits("{dataset}"),
    output:
        predictions=directory(L.prediction_dir("{run}", "{dataset}")),
        metrics=L.run_metrics("{run}", "{dataset}"),
    log:
        L.log("evaluate/{run}.{dataset}.gather"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=SHARDS_PARAMS,
    shell:
        "{params.cli} gather run --dataset {wildcards.dataset} --name {wildcards.run}"
        " --params {params.p:q} > {log} 2>&1"


rule gather_clicks:
    input:
        metrics=sharded(S.run_click_metrics("{run}", "{dataset}")),
        split=L.dataset_splits("{dataset}"),
    output:
        L.run_click_metrics("{run}", "{dataset}"),
    log:
        L.log("evaluate/{run}.{dataset}.clicks.gather"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=SHARDS_PARAMS,
    shell:
        "{params.cli} gather clicks --dataset {wildcards.dataset} --name {wildcards.run}"
        " --params {params.p:q} > {log} 2>&1"


rule summarize:
    input:
        metrics=[L.run_metrics(r, d) for r, d in EVAL_PARTS],
        clicks=[L.run_click_metrics(r, d) for r, d in CLICK_PARTS],
    output:
        metrics=L.metrics(),
        summary=L.summary(),
        dice_plot=L.dice_plot(),
        click_metrics=L.click_metrics(),
        clicks_plot=L.clicks_plot(),
        paired_tests=L.paired_tests(),
    log:
        L.log("summarize"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=P(STUDY.summarize_params()),
    shell:
        "{params.cli} summarize --params {params.p:q} > {log} 2>&1"
