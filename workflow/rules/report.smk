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
        nnunet=STUDY.nnunet_stamps(),
        nnunet_best=STUDY.nnunet_best_stamps(),
    output:
        L.report(),
    log:
        L.log("report"),
    conda:
        ENV
    params:
        cli=SAMSTUDY,
        p=lambda w, input: P(
            STUDY.report_params(list(input.nnunet) + list(input.nnunet_best))
        ),
    shell:
        "{params.cli} report --params {params.p:q} > {log} 2>&1"
