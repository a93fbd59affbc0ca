# Report: one self-contained HTML page with the provenance of every number.


rule report:
    input:
        metrics=L.metrics(),
        summary=L.summary(),
        clicks=L.click_metrics(),
        manifest=L.manifest(),
        splits=L.splits(),
        rejected=L.rejected(),
        paired=L.paired_tests(),
        preprocessed=[L.preprocessed_dir(d) for d in DATASETS],
        predictions=[L.prediction_dir(r, d) for r, d in EVAL_PARTS],
        nnunet=[
            stamp
            for d in NNUNET_DATASETS
            for stamp in nnunet_trained(d, nnunet_configs(d))
            + (
                nnunet_prompted_trained(d, nnunet_configs(d))
                if NNUNET_PROMPTED
                else []
            )
        ],
        nnunet_best=[
            L.nnunet_best_done(d)
            for d in NNUNET_DATASETS
            if nnunet_run_name("best") in nnunet_runs(d)
        ],
    output:
        L.report(),
    log:
        L.log("report"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w, input: P(
            {
                "config": CFG,
                "nnunet_stamps": list(input.nnunet) + list(input.nnunet_best),
            }
        ),
    shell:
        "{params.cli} report --params {params.p:q} > {log} 2>&1"
