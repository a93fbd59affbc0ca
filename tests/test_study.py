"""The study table (samstudy.study): runs, where they are scored, nnU-Net's variants, each rule's params,
and the config errors it refuses before any job runs."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import update_config

from samstudy import config as samstudy_config
from samstudy import study as study_module
from samstudy.config import ConfigError
from samstudy.study import NNUNET_PLAIN, NNUNET_PROMPTED, Study, check_checkpoints, check_families, runs_protocol
from tests.conftest import REPO, dry_run_jobs

P = samstudy_config.as_param


def merged(*examples: str, **overrides) -> dict:
    """The default study with example files and overrides merged over it as Snakemake merges them: the
    --configfile files first, then the Snakefile's `configfile:` (the default) and the files again over it
    (so their new entries come first in a mapping)."""
    user: dict = {}
    for name in examples:
        update_config(user, yaml.safe_load((REPO / "config" / "examples" / f"{name}.yaml").read_text()))
    update_config(user, overrides)
    raw = copy.deepcopy(user)
    update_config(raw, yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    update_config(raw, user)
    return raw


def study_of(*examples: str, **overrides) -> Study:
    return Study(samstudy_config.validate(merged(*examples, **overrides)))


def test_default_study_runs_and_where_they_are_scored():
    study = study_of()
    assert list(study.runs) == ["zeroshot.box", "zeroshot.auto_box", "decoder.box", "decoder.auto_box", "nnunet_2d"]
    assert study.run_info("decoder.auto_box") == {
        "method": "decoder",
        "model": "litemedsam",
        "adaptation": "decoder",
        "protocol": "auto_box",
        "prompted": False,
        "prompt_source": "run:nnunet_2d",
    }
    # mni152 is test_only: no nnU-Net there, so no auto_box either (its source run is not made there)
    assert study.eval_parts == [
        ("zeroshot.box", "phantom"),
        ("zeroshot.box", "skin2d"),
        ("zeroshot.box", "mni152"),
        ("zeroshot.auto_box", "phantom"),
        ("zeroshot.auto_box", "skin2d"),
        ("decoder.box", "phantom"),
        ("decoder.box", "skin2d"),
        ("decoder.box", "mni152"),
        ("decoder.auto_box", "phantom"),
        ("decoder.auto_box", "skin2d"),
        ("nnunet_2d", "phantom"),
        ("nnunet_2d", "skin2d"),
    ]
    assert study.click_parts == []
    assert study.train_datasets == study.nnunet_datasets == ["phantom", "skin2d"]
    assert study.nnunet_variants == (NNUNET_PLAIN,)
    assert [study.nnunet_dataset_id(d) for d in ("phantom", "skin2d")] == [500, 501]
    assert study.gathered() == sorted(
        [f"results/embeddings/litemedsam/{d}.json" for d in ("phantom", "skin2d", "mni152")]
        + [f"results/prompts/{d}/box.json" for d in ("phantom", "skin2d", "mni152")]
        + [f"results/prompts/{d}/auto_box.json" for d in ("phantom", "skin2d")]
    )
    assert study.nnunet_stamps() == [
        "results/nnunet/stamps/phantom.2d.fold0.trained.json",
        "results/nnunet/stamps/skin2d.2d.fold0.trained.json",
    ]
    assert study.nnunet_best_stamps() == []


def test_the_four_arms_params_are_the_rules_params_before_the_study_table():
    """The params JSON of the four-arms study's jobs, as `snakemake -n -p` printed them when common.smk
    computed them (commit 1771157): the same strings, so no job of an existing results folder reruns."""
    study = study_of("four_arms")
    model = '"model":{"checkpoint":null,"sha256":null,"type":"litemedsam"}'
    train = '"train":{"batch_size":8,"device":"auto","epochs":3,"fold":0,"jitter_px":5,"lr":0.0001,"patience":5,'
    train += '"precision":"auto","weight_decay":0.01}'
    nnunet = '"nnunet":{"device":"auto","quick":{"epochs":10,"iterations_per_epoch":25,"max_features":64,'
    nnunet += '"val_iterations_per_epoch":5},"schedule":"quick","select_best":false}'
    expected = {
        P(study.embed_params("litemedsam")): '{"embed":{"batch_size":1,"device":"auto","precision":"auto",'
        '"slice_margin":0,"slices":"all","training_slices":"all"},' + model + "}",
        P(study.train_params("promptfree")): '{"datasets":["phantom","skin2d"],"method":{"adaptation":"promptfree",'
        '"model":"litemedsam"},' + model + ',"seed":42,' + train + "}",
        P(study.infer_params("promptfree")): '{"device":"auto","method":{"adaptation":"promptfree",'
        '"model":"litemedsam"},' + model + "}",
        P(study.infer_params("decoder")): '{"device":"auto","infer":{"overlap":"official"},"method":'
        '{"adaptation":"decoder","model":"litemedsam"},' + model + "}",
        P(study.prompts_params("box")): '{"prompts":{"components":"union"},"seed":42}',
        P(study.derived_prompts_params("auto_box3d")): '{"derived":{"from":"nnunet_2d","kind":"box3d"},'
        '"prompts":{"box3d":{"margin_px":3},"components":"union"},"seed":42}',
        P(study.preprocess_params("phantom")): '{"dataset":{"modality":"CT","name":"phantom","window":null},'
        '"preprocess":{"ct_window":{"level":40,"width":400},"intensity":"medsam","slice_axis":"axial"}}',
        P(study.split_params("phantom")): '{"role":"train_test","seed":42,"splits":{"n_folds":1,'
        '"test_fraction":0.25,"val_fraction":0.34}}',
        P(study.nnunet_params("export", NNUNET_PLAIN, "phantom")): '{"dataset_id":500}',
        P(study.nnunet_params("export", NNUNET_PROMPTED, "phantom")): '{"dataset_id":600,"jitter_px":5,'
        '"prompted":true,"seed":42}',
        P(study.nnunet_params("plan", NNUNET_PROMPTED, "phantom")): '{"configurations":["2d"],"dataset_id":600,'
        '"prompted":true,"schedule":"quick"}',
        P(study.nnunet_params("train", NNUNET_PLAIN, "phantom")): '{"dataset_id":500,' + nnunet + ',"seed":42}',
        P(study.nnunet_params("train", NNUNET_PROMPTED, "phantom")): '{"dataset_id":600,'
        + nnunet
        + ',"prompted":true,"seed":42}',
        P(study.nnunet_params("predict", NNUNET_PROMPTED, "phantom")): '{"dataset_id":600,"folds":[0],'
        '"nnunet":{"device":"auto","schedule":"quick"},"prompted":true}',
        P(study.evaluate_params("nnunet_prompted_2d")): '{"evaluate":{"nsd_tolerance_mm":2.0},"run_info":'
        '{"adaptation":"supervised","method":"nnunet_prompted_2d","model":"nnunet","prompt_source":'
        '"ground_truth","prompted":true,"protocol":"box"}}',
        P(study.shards_params()): '{"shards":1}',
        P(study.datasets_params()): '{"datasets":["phantom","skin2d","mni152"]}',
    }
    for got, want in expected.items():
        assert got == want
    parts = P(study.summarize_params())
    assert parts.startswith('{"click_parts":[],"parts":[["promptfree.none","phantom"],["promptfree.none","skin2d"],')
    assert parts.endswith('["nnunet_prompted_2d","phantom"],["nnunet_prompted_2d","skin2d"]],"seed":42}')
    assert study.nnunet_stamps() == [
        "results/nnunet/stamps/phantom.2d.fold0.trained.json",
        "results/nnunet/stamps/phantom.prompted.2d.fold0.trained.json",
        "results/nnunet/stamps/skin2d.2d.fold0.trained.json",
        "results/nnunet/stamps/skin2d.prompted.2d.fold0.trained.json",
    ]


def test_nnunet_variants_configurations_and_ids():
    nnunet = {
        "configurations": ["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"],
        "folds": "all",
        "select_best": True,
        "prompted": True,
        "dataset_id_start": 899,
    }
    study = study_of(nnunet=nnunet, splits={"n_folds": 2})
    assert study.nnunet_variants == (NNUNET_PLAIN, NNUNET_PROMPTED)
    # skin2d holds 2D images: nnU-Net plans only its 2d configuration there
    assert study.nnunet_runs("skin2d") == ["nnunet_2d", "nnunet_best", "nnunet_prompted_2d"]
    assert study.nnunet_runs("phantom")[-4:] == [f"nnunet_prompted_{c}" for c in nnunet["configurations"]]
    assert study.nnunet_runs("mni152") == []
    # three-digit ids: the prompted dataset's is the plain one + 100, or - 100 above 899
    assert study.nnunet_dataset_id("phantom", NNUNET_PROMPTED) == 999
    assert study.nnunet_dataset_id("skin2d") == 900 and study.nnunet_dataset_id("skin2d", NNUNET_PROMPTED) == 800
    assert study.nnunet_train_inputs("phantom", "3d_cascade_fullres", NNUNET_PROMPTED) == [
        "results/nnunet/stamps/phantom.prompted.planned.json",
        "results/nnunet/stamps/phantom.prompted.3d_lowres.fold0.trained.json",
        "results/nnunet/stamps/phantom.prompted.3d_lowres.fold1.trained.json",
    ]
    assert study.nnunet_select_params("skin2d") == {"dataset_id": 900, "configurations": ["2d"], "folds": [0, 1]}
    assert study.nnunet_best_stamps() == [f"results/nnunet/stamps/{d}.best.json" for d in ("phantom", "skin2d")]
    assert study_of(nnunet={"enabled": False, "prompted": True}).nnunet_variants == ()


def test_which_runs_exist_and_where_they_are_scored():
    sam2 = {"type": "sam2.1_hiera_t", "image_size": 256, "random_init": True}
    study = study_of(
        models={"sam2": sam2},
        methods={"pf": {"model": "litemedsam", "adaptation": "promptfree"}, "s2": {"model": "sam2"}},
        prompts={"protocols": ["box", "propagate"], "derived": {"auto_pf": {"from": "pf.none", "kind": "propagate"}}},
        nnunet={"enabled": False},
    )
    # propagate and a derived propagate protocol: SAM 2 methods only; a prompt-free method: one run
    assert [r for r in study.runs if r.endswith(("propagate", "auto_pf"))] == ["s2.propagate", "s2.auto_pf"]
    assert "pf.none" in study.runs and study.runs["pf.none"].protocol == "none"
    # the prompt-free method is scored where it was trained; what derives from it, there too; auto_box's
    # source (nnU-Net) is not made: its runs exist and are scored nowhere
    assert [d for r, d in study.eval_parts if r == "pf.none"] == ["phantom", "skin2d"]
    assert [d for r, d in study.eval_parts if r == "s2.auto_pf"] == ["phantom", "skin2d"]
    assert "zeroshot.auto_box" in study.runs and not any(r == "zeroshot.auto_box" for r, _ in study.eval_parts)
    assert [d for r, d in study.eval_parts if r == "s2.box"] == ["phantom", "skin2d", "mni152"]
    # methods that adapt the encoder read their own embeddings, the others the base model's cache
    lora = study_of("adaptations")
    assert lora.infer_inputs("lora", "phantom", "box", "0of1") == {
        "prompts": "results/shards/0of1/prompts/phantom/box.json",
        "checkpoint": "results/models/lora/checkpoint.pt",
        "embeddings": "results/shards/0of1/embeddings/adapted/lora/phantom.json",
    }
    assert "embeddings" not in lora.train_inputs("lora") and "embeddings" in lora.train_inputs("decoder")


def test_a_method_that_trains_needs_a_dataset_to_train_on():
    """Found as a new user would: a config whose datasets are all test_only, with `decoder` merged in from
    the default study, embedded for minutes and failed in the train job. Now refused up front."""
    test_only = [
        {"name": "brain", "format": "nifti", "modality": "MR", "role": "test_only", "builtin": {"kind": "mni152"}}
    ]
    with pytest.raises(ConfigError, match=r"methods decoder \(adaptation decoder\).*no dataset could train them"):
        study_of(datasets=test_only)
    # zero-shot only (the decoder removed by a null entry): nothing to train, a valid study
    study = study_of(datasets=test_only, methods={"decoder": None})
    assert list(study.runs) == ["zeroshot.box", "zeroshot.auto_box"] and study.train_datasets == []


def test_a_missing_checkpoint_is_refused_before_any_job(tmp_path):
    real = tmp_path / "sam_vit_h.pth"
    models = {"vith": {"type": "sam_vit_h", "checkpoint": str(tmp_path / "missing.pth")}}
    cfg = samstudy_config.validate(merged(models=models, methods={"h": {"model": "vith"}}))
    with pytest.raises(ConfigError, match=r"models\.vith\.checkpoint: .*missing\.pth does not exist.*methods h"):
        check_checkpoints(cfg)
    # a model no method uses makes no job: not checked; random weights need no file; an existing file passes
    check_checkpoints(samstudy_config.validate(merged(models=models)))
    models["vith"]["random_init"] = True
    check_checkpoints(samstudy_config.validate(merged(models=models, methods={"h": {"model": "vith"}})))
    real.write_bytes(b"weights")
    ok = {"vith": {"type": "sam_vit_h", "checkpoint": str(real)}}
    check_checkpoints(samstudy_config.validate(merged(models=ok, methods={"h": {"model": "vith"}})))
    with pytest.raises(ConfigError, match="is a folder"):
        folder = {"vith": {"type": "sam_vit_h", "checkpoint": str(tmp_path)}}
        check_checkpoints(samstudy_config.validate(merged(models=folder, methods={"h": {"model": "vith"}})))


def test_null_removes_an_entry_of_the_default_study():
    cfg = samstudy_config.validate(
        merged(
            methods={"decoder": None, "zeroshot": None, "mine": {"model": "litemedsam"}},
            prompts={"derived": {"auto_box": None}},
            nnunet={"select_best": None},
        )
    )
    assert list(cfg["methods"]) == ["mine"] and cfg["prompts"]["derived"] == {}
    assert cfg["nnunet"]["select_best"] is False  # a removed setting takes its schema default
    # null where null is a value (checkpoint: packaged weights) means the same after removal: the default
    assert cfg["models"]["litemedsam"]["checkpoint"] is None
    # also inside the entries of a list (datasets)
    ds = merged()["datasets"][0]
    cfg = samstudy_config.validate({"datasets": [{**ds, "patient_id": None}]})
    assert "patient_id" not in cfg["datasets"][0]
    with pytest.raises(ConfigError, match="schema"):  # every method removed: a study needs one
        samstudy_config.validate(merged(methods={"decoder": None, "zeroshot": None}))


def test_a_user_config_removes_the_demos_methods_and_auto_box_in_a_dry_run(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("methods: {decoder: null}\nprompts: {derived: {auto_box: null}}\n")
    jobs = dry_run_jobs(tmp_path, "--configfile", str(mine))
    rules = {rule for rule, _ in jobs}
    assert "train" not in rules and "derived_prompts" not in rules
    infer = sorted(line for rule, job in jobs if rule == "infer" for line in job.splitlines() if "wildcards" in line)
    assert len(infer) == 3 and all("method=zeroshot, protocol=box" in line for line in infer)


def test_bad_configs_stop_the_workflow_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "datasets: [{name: brain, format: nifti, modality: MR, role: test_only, builtin: {kind: mni152}}]\n"
        "models: {vith: {type: sam_vit_h, checkpoint: /missing.pth}}\n"
        "methods: {h: {model: vith}}\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)]
    cmd += ["--config", f"results_dir={tmp_path}/r", f"cache_dir={tmp_path}/c"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "models.vith.checkpoint: /missing.pth does not exist" in out.stdout + out.stderr
    bad.write_text(bad.read_text().replace("checkpoint: /missing.pth", "random_init: true"))
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "no dataset could train them" in out.stdout + out.stderr


def test_random_init_models_get_a_seed_real_weights_none():
    cfg = samstudy_config.validate(
        merged(
            seed=7,
            models={
                "b": {"type": "sam_vit_b", "random_init": True},
                "b3": {"type": "sam_vit_b", "random_init": True, "seed": 3},
            },
        )
    )
    assert cfg["models"]["b"]["seed"] == 7 and cfg["models"]["b3"]["seed"] == 3
    assert "seed" not in cfg["models"]["litemedsam"]  # real weights: their entry, and jobs, unchanged
    with pytest.raises(ConfigError, match="'seed' applies to random_init"):
        samstudy_config.validate(merged(models={"litemedsam": {"seed": 3}}))


def test_what_a_family_cannot_run_is_refused_with_the_reason():
    sam2 = {"type": "sam2.1_hiera_t", "image_size": 256, "random_init": True}
    for adaptation in ("lora", "promptfree"):
        with pytest.raises(
            ConfigError,
            match=rf"methods.m: adaptation '{adaptation}' is not built for SAM 2 models "
            r"\(they run none, decoder\): promptfree builds a segment_anything mask decoder",
        ):
            study_of(models={"sam2": sam2}, methods={"m": {"model": "sam2", "adaptation": adaptation}})
    with pytest.raises(ConfigError, match=r"models.litemedsam: image_size applies to the SAM 2 types only \(sam2.1"):
        study_of(models={"litemedsam": {"image_size": 256}})
    cfg = samstudy_config.validate(
        merged(models={"sam2": sam2}, methods={"s2": {"model": "sam2"}}, prompts={"protocols": ["box", "propagate"]})
    )
    assert check_families(cfg) is cfg
    assert runs_protocol(cfg, "s2", "propagate") and not runs_protocol(cfg, "zeroshot", "propagate")
    assert runs_protocol(cfg, "zeroshot", "auto_box") and runs_protocol(cfg, "zeroshot", "box")


def test_the_rules_of_both_nnunet_variants_keep_their_names_for_the_slurm_profile(tmp_path):
    """nnunet.smk makes the plain and the prompted nnU-Net rules in one loop over the variants: their names
    are still those the Slurm profile gives threads and resources to."""
    cmd = [sys.executable, "-m", "snakemake", "--list-rules", "--config", f"results_dir={tmp_path}/r"]
    rules = set(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=True).stdout.split())
    steps = ("export", "plan", "train", "predict")
    assert {f"{v.rule}_{s}" for v in (NNUNET_PLAIN, NNUNET_PROMPTED) for s in steps} <= rules
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert set(profile["set-threads"]) | set(profile["set-resources"]) <= rules


def test_a_protocol_no_method_can_run_is_refused_with_the_types_that_can():
    """`propagate` needs SAM 2's video memory: listed with LiteMedSAM methods only it would make no run at
    all (silently, before); with a SAM 2 method among them, only the SAM 2 method runs it."""
    with pytest.raises(ConfigError, match=r"protocol 'propagate' is run by no method.*litemedsam.*sam2\.1_hiera_t"):
        study_of(prompts={"protocols": ["box", "propagate"]})
    derived = {"auto_p": {"from": "nnunet_2d", "kind": "propagate"}}
    with pytest.raises(ConfigError, match=r"protocol 'auto_p' \(kind propagate\) is run by no method"):
        study_of(prompts={"derived": derived})
    sam2 = {"type": "sam2.1_hiera_t", "image_size": 256, "random_init": True}
    study = study_of(models={"sam2": sam2}, methods={"s2": {"model": "sam2"}}, prompts={"protocols": ["propagate"]})
    assert [r for r in study.runs if r.endswith(".propagate")] == ["s2.propagate"]
    # a study with no prompt-based method lists protocols that have no runs: nothing to refuse
    promptfree = {"zeroshot": None, "decoder": None, "pf": {"model": "litemedsam", "adaptation": "promptfree"}}
    assert "pf.none" in study_of(methods=promptfree, prompts={"protocols": ["propagate"]}).runs


def test_study_validate_is_what_the_workflow_checks():
    """study.validate/load run the config layer's checks and the study table's, as the Snakefile does."""
    assert study_module.load("config/config.yaml") == samstudy_config.load("config/config.yaml")
    sam2_lora = merged(
        models={"sam2": {"type": "sam2.1_hiera_t", "random_init": True}},
        methods={"m": {"model": "sam2", "adaptation": "lora"}},
    )
    samstudy_config.validate(sam2_lora)  # the config layer knows no family
    with pytest.raises(ConfigError, match="adaptation 'lora' is not built for SAM 2"):
        study_module.validate(sam2_lora)
