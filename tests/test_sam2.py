"""The sam2 family held against the official `sam2` package with the same (seeded random) weights: 2D masks
against `SAM2ImagePredictor`, the `propagate` protocol against `SAM2VideoPredictor` run as MedSAM's
evaluation runs it; checkpoint checks. Small models (image_size 256) and tiny phantoms keep it fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from samstudy.embed import encode  # noqa: E402
from samstudy.families.sam2 import feature_shapes  # noqa: E402
from samstudy.models import CheckpointError, load_model  # noqa: E402
from samstudy.protocols.base import decode  # noqa: E402
from tests.conftest import run_snakemake, workflow_copy  # noqa: E402

SIZE = 256
ENTRY = {"type": "sam2.1_hiera_t", "image_size": SIZE, "random_init": True}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not a.any() and not b.any() else 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model(ENTRY)


def official_model(model, video: bool = False):
    """The official builder (hydra, the package's config) with samstudy's weights."""
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    build = build_sam2_video_predictor if video else build_sam2
    official = build(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", hydra_overrides_extra=[f"++model.image_size={SIZE}"]
    )
    official.load_state_dict(model.sam.model.state_dict(), strict=True)
    return official


@pytest.fixture(scope="module")
def image_predictor(model):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(official_model(model))
    predictor._bb_feat_sizes = [(h, w) for _, h, w in feature_shapes(SIZE)]  # hard-coded for 1024 there
    return predictor


def phantom_slice(rng: np.random.Generator, h: int = 120, w: int = 150) -> np.ndarray:
    img = (rng.random((h, w)) * 60).astype(np.uint8)
    img[30:80, 40:100] += 150
    img[85:110, 10:40] += 90
    return img


def test_cache_entry_holds_the_embedding_and_high_res_features(model):
    emb = encode(model, phantom_slice(np.random.default_rng(0))[None], 1, "fp32")
    values = sum(c * h * w for c, h, w in feature_shapes(SIZE))
    assert emb.shape == (1, values) and emb.dtype == np.float16
    assert emb.nbytes == 512 * 1024  # 32x64^2 + 64x32^2 + 256x16^2 values, fp16 (8 MiB at 1024)
    assert sum(c * h * w for c, h, w in feature_shapes(1024)) * 2 == 8 * 1024 * 1024


def test_2d_masks_match_sam2_image_predictor(model, image_predictor):
    rng = np.random.default_rng(1)
    img = phantom_slice(rng)
    hw = img.shape
    emb = encode(model, img[None], 1, "fp32")[0]  # fp16 in the cache, as every run reads it
    image_predictor.set_image(np.repeat(img[:, :, None], 3, axis=-1))
    cases = [
        ({"box": [40, 30, 99, 79]}, {"box": np.array([40, 30, 99, 79]), "multimask_output": False}),
        ({"box": [10, 85, 39, 109]}, {"box": np.array([10, 85, 39, 109]), "multimask_output": False}),
        (
            {"points": [[70, 55], [50, 40], [20, 100]], "point_labels": [1, 1, 0]},
            {
                "point_coords": np.array([[70, 55], [50, 40], [20, 100]]),
                "point_labels": np.array([1, 1, 0]),
                "multimask_output": False,
            },
        ),
    ]
    for ours, theirs in cases:
        native = decode(model, emb, [ours], hw)[1][0].numpy() > model.family.threshold
        masks, _, _ = image_predictor.predict(**theirs)
        assert masks[0].any()
        assert dice(native, masks[0] > 0) >= 0.98, ours
    # one point: SAM's three masks, the best predicted IoU kept (samstudy's rule for one point)
    native = decode(model, emb, [{"points": [[70, 55]], "point_labels": [1]}], hw)[1][0].numpy() > 0
    masks, scores, _ = image_predictor.predict(point_coords=np.array([[70, 55]]), point_labels=np.array([1]))
    assert dice(native, masks[scores.argmax()] > 0) >= 0.98
    # several boxes in one decoder call (one image, N prompts: repeat_image), as the official batched boxes
    both = decode(model, emb, [{"box": [40, 30, 99, 79]}, {"box": [10, 85, 39, 109]}], hw)[1].numpy() > 0
    masks, _, _ = image_predictor.predict(box=np.array([[40, 30, 99, 79], [10, 85, 39, 109]]), multimask_output=False)
    for k in range(2):
        assert dice(both[k], masks[k, 0] > 0) >= 0.98
    # a correction round (clicks): box + a click, the previous low-res logits as the mask prompt (the
    # official predictor returns them clamped to [-32, 32] for that)
    box = [40, 30, 99, 79]
    low, _ = decode(model, emb, [{"box": box}], hw)
    _, _, their_low = image_predictor.predict(box=np.array(box), multimask_output=False)
    assert np.allclose(low[0].numpy(), their_low, atol=1e-3) and low.abs().max() <= 32
    second = {"box": box, "points": [[20, 100]], "point_labels": [0]}
    native = decode(model, emb, [second], hw, mask_input=low)[1][0].numpy() > 0
    masks, _, _ = image_predictor.predict(
        point_coords=np.array([[20, 100]]),
        point_labels=np.array([0]),
        box=np.array(box),
        mask_input=their_low,
        multimask_output=False,
    )
    assert dice(native, masks[0] > 0) >= 0.98


def test_checkpoints_are_checked(model, tmp_path):
    path = tmp_path / "medsam2_like.pt"
    torch.save({"model": model.sam.model.state_dict()}, path)  # the official layout: weights under "model"
    loaded = load_model({"type": "medsam2", "image_size": SIZE, "checkpoint": str(path)})
    assert loaded.sha256 != "random-init" and loaded.checkpoint == str(path)
    x = torch.zeros(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert torch.equal(loaded.sam.image_encoder(x), model.sam.image_encoder(x))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model({"type": "medsam2", "image_size": SIZE, "checkpoint": str(path), "sha256": "0" * 64})
    with pytest.raises(CheckpointError, match=r"medsam2_like\.pt does not fit model type 'sam2\.1_hiera_s'"):
        load_model({"type": "sam2.1_hiera_s", "image_size": SIZE, "checkpoint": str(path)})
    with pytest.raises(CheckpointError, match="not found"):
        load_model({"type": "sam2.1_hiera_t", "checkpoint": str(tmp_path / "missing.pt")})
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"x": np.dtype("float32")}}, pickled)  # not loadable with weights_only=True
    with pytest.raises(CheckpointError, match="could not be read"):
        load_model({"type": "sam2.1_hiera_t", "checkpoint": str(pickled)})


def test_random_init_weights_come_from_the_entry_seed(model):
    """SAM 2's random weights are the entry's seed's (0 when absent), keyed by their hash."""
    from samstudy.models import weights_sha256

    assert model.sha256 == weights_sha256(model.sam) == load_model({**ENTRY, "seed": 0}).sha256
    assert load_model({**ENTRY, "seed": 1}).sha256 != model.sha256


def official_medsam_sam2_3d(image_predictor, video_predictor, img_3d: np.ndarray, boxes_3d: list) -> np.ndarray:
    """A transcription of bowang-lab/MedSAM exp_inference/infer_SAM2_3D_npz.py `infer_3d` (commit 87bc795)
    on the official predictors: PIL frames, the image predictor's box mask on the middle slice,
    add_new_mask + propagate_in_video forward, reset, add_new_mask + reverse; `segs_3D[...] = idx`. The only
    change: frames from arrays into the official init_state, where the script's own predictor
    (`build_sam2_video_predictor_npz`) takes the array."""
    from unittest import mock

    import sam2.sam2_video_predictor as video
    from PIL import Image

    d, h, w = img_3d.shape
    segs_3d = np.zeros(img_3d.shape, dtype=np.uint8)
    resized = np.zeros((d, 3, SIZE, SIZE))
    for i in range(d):  # resize_grayscale_to_rgb_and_resize
        resized[i] = np.array(
            Image.fromarray(img_3d[i].astype(np.uint8)).convert("RGB").resize((SIZE, SIZE))
        ).transpose(2, 0, 1)
    img_resized = torch.from_numpy(resized / 255.0)
    img_resized -= torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
    img_resized /= torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
    for idx, box in enumerate(boxes_3d, start=1):
        x0, y0, z_min, x1, y1, z_max = box
        box_2d = np.array([[x0, y0, x1, y1]])
        img = img_resized[z_min : z_max + 1]
        z_mid = int(img.shape[0] / 2)
        z_mid_orig = z_mid + z_min
        with torch.inference_mode():
            image_predictor.set_image(np.repeat(img_3d[z_mid_orig][:, :, None], 3, axis=-1))
            mks, _, _ = image_predictor.predict(box=box_2d, multimask_output=False)
            mask_prompt = mks[0].astype(np.uint8)
            with mock.patch.object(video, "load_video_frames", lambda img=img, **kw: (img, h, w)):
                state = video_predictor.init_state("<arrays>", offload_video_to_cpu=True)
            _, _, masks = video_predictor.add_new_mask(state, frame_idx=z_mid, obj_id=1, mask=mask_prompt)
            segs_3d[z_mid_orig, ((masks[0] > 0.0).cpu().numpy())[0]] = idx
            for k, _, logits in video_predictor.propagate_in_video(state):
                segs_3d[z_min + k, (logits[0] > 0.0).cpu().numpy()[0]] = idx
            video_predictor.reset_state(state)
            _, _, masks = video_predictor.add_new_mask(state, frame_idx=z_mid, obj_id=1, mask=mask_prompt)
            for k, _, logits in video_predictor.propagate_in_video(state, reverse=True):
                segs_3d[z_min + k, (logits[0] > 0.0).cpu().numpy()[0]] = idx
            video_predictor.reset_state(state)
    return segs_3d


def phantom_volume() -> tuple[np.ndarray, np.ndarray]:
    """7 slices of 64 x 80: a growing then shrinking ellipse (label 1) and a bar (label 2), on noise."""
    rng = np.random.default_rng(3)
    labels = np.zeros((7, 64, 80), dtype=np.uint8)
    yy, xx = np.mgrid[:64, :80]
    for s, r in enumerate([6, 9, 12, 13, 12, 9, 6]):
        labels[s][((yy - 30) / r) ** 2 + ((xx - 35) / (r * 1.3)) ** 2 <= 1] = 1
    labels[1:6, 48:56, 50:74] = 2
    image = (rng.random(labels.shape) * 50).astype(np.uint8) + np.array([0, 170, 110], dtype=np.uint8)[labels]
    return image, labels


def test_propagate_matches_medsams_sam2_3d_protocol_on_the_official_predictors(model, image_predictor):
    from samstudy.prompts import case_prompts
    from samstudy.protocols.base import assemble
    from samstudy.protocols.propagate import predict_propagate

    image, labels = phantom_volume()
    prompts = case_prompts(labels, "propagate", {"components": "union"}, np.random.default_rng(0))
    assert [p["box3d"][2::3] for p in prompts] == [[0, 6], [1, 5]]
    emb = encode(model, image, 1, "fp32")
    embeddings = {s: emb[s] for s in range(len(image))}
    predictions, records = predict_propagate(model, embeddings, prompts, image, "case")
    ours = assemble(labels.shape, predictions, model.family.threshold)
    assert [r["prompt_slice"] for r in records] == [3, 3]  # z_min + int(n / 2)
    assert records[0]["slices"] == {"forward": [3, 4, 5, 6], "reverse": [3, 2, 1, 0]}

    theirs = official_medsam_sam2_3d(
        image_predictor, official_model(model, video=True), image, [p["box3d"] for p in prompts]
    )
    for value in (1, 2):
        assert (theirs == value).sum() > 0
        assert dice(ours == value, theirs == value) >= 0.98, value
    print("propagate: voxels differing from the official loop:", int((ours != theirs).sum()), "of", ours.size)


@pytest.mark.slow
def test_example_config_dry_run_has_sam2_jobs(tmp_path):
    import re

    out = run_snakemake(workflow_copy(tmp_path), "-n", "--configfile", "config/examples/sam2.yaml")
    jobs = []  # (rule, wildcards) of every planned job
    for rule, wildcards in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", out, re.M):
        jobs.append((rule, dict(pair.split("=", 1) for pair in wildcards.split(", "))))
    embedded = {w["dataset"] for rule, w in jobs if rule == "embed" and w.get("model") == "sam2"}
    assert embedded == {"phantom", "skin2d", "mni152"}
    propagated = {(w["method"], w["dataset"]) for rule, w in jobs if rule == "infer" and w["protocol"] == "propagate"}
    assert {m for m, _ in propagated} == {"sam2_zeroshot", "sam2_decoder"}  # LiteMedSAM methods: no propagate
    assert {d for _, d in propagated} == {"phantom", "skin2d", "mni152"}
    assert any(rule == "train" and w.get("method") == "sam2_decoder" for rule, w in jobs)


@pytest.mark.slow
def test_small_sam2_study_runs_end_to_end(tmp_path):
    """A real run (random-init Hiera-T at 128, four tiny phantom cases): embed, prompts, decoder training
    from the cached SAM 2 features, propagate inference, evaluation, report.
    (2D box inference is held against the official predictor above.)"""
    import json

    import pandas as pd
    import SimpleITK as sitk
    import yaml

    from tests.conftest import TINY_PHANTOM

    work = workflow_copy(tmp_path)
    phantom = {**TINY_PHANTOM, "scans_per_patient": 1}
    study = {
        "results_dir": "results",
        "cache_dir": "cache",
        "seed": 7,
        "datasets": [
            {
                "name": "phantom",
                "format": "synthetic",
                "modality": "CT",
                "patient_id": r"^(pat\d+)",
                "synthetic": phantom,
            }
        ],
        "splits": {"test_fraction": 0.25, "val_fraction": 0.34},
        "embed": {"slices": "needed"},
        "models": {"sam2": {"type": "sam2.1_hiera_t", "image_size": 128, "random_init": True}},
        "prompts": {"protocols": ["propagate"], "derived": {}},
        "methods": {"sam2_zeroshot": {"model": "sam2"}, "sam2_decoder": {"model": "sam2", "adaptation": "decoder"}},
        "train": {"epochs": 1},
        "nnunet": {"enabled": False},
    }
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(study))
    run_snakemake(work)
    results = work / "results"
    metrics = pd.read_parquet(results / "metrics.parquet")
    assert set(metrics["run"]) == {"sam2_zeroshot.propagate", "sam2_decoder.propagate"}
    manifest = pd.read_parquet(results / "manifest.parquet").set_index("case_id")
    folder = results / "predictions" / "sam2_zeroshot.propagate" / "phantom"
    cases = sorted(folder.glob("*.nii.gz"))
    assert cases
    for path in cases:
        case = path.name.removesuffix(".nii.gz")
        pred, ref = sitk.ReadImage(str(path)), sitk.ReadImage(str(results / manifest.loc[case, "label"]))
        assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == ref.GetSpacing()
        assert pred.GetOrigin() == ref.GetOrigin() and pred.GetDirection() == ref.GetDirection()
        record = json.loads((folder / "prompts" / f"{case}.json").read_text())
        for obj in record["objects"]:
            s0, s1 = obj["box3d"][2], obj["box3d"][5]
            assert obj["prompt_slice"] == s0 + (s1 - s0 + 1) // 2
            assert obj["slices"]["forward"][0] == obj["prompt_slice"]
            # reverse starts at the prompt slice too, unless that is the box's first (the official code skips it)
            assert obj["slices"]["reverse"][:1] in ([], [obj["prompt_slice"]])
            assert sorted(obj["slices"]["forward"] + obj["slices"]["reverse"][1:]) == list(range(s0, s1 + 1))
    info = json.loads((folder / "run.json").read_text())
    assert info["family"] == "sam2.1_hiera_t" and info["image_size"] == 128


def test_config_names_sam2_types_and_rejects_what_they_do_not_run(tmp_path):
    from samstudy import config as samstudy_config
    from samstudy.families import types_with
    from samstudy.families.sam2 import SAM2_CONFIGS
    from samstudy.study import runs_protocol
    from tests.conftest import study_config

    enum = samstudy_config.schema()["properties"]["models"]["additionalProperties"]["properties"]["type"]["enum"]
    assert set(types_with("image_size")) == set(SAM2_CONFIGS) <= set(enum)
    sam2 = {"type": "sam2.1_hiera_t", "image_size": 256, "random_init": True}
    cfg = study_config(
        tmp_path,
        models={"lite": {"type": "litemedsam"}, "sam2": sam2},
        methods={"lite": {"model": "lite"}, "s2": {"model": "sam2"}, "s2d": {"model": "sam2", "adaptation": "decoder"}},
        prompts={"protocols": ["box", "propagate"]},
    )
    assert runs_protocol(cfg, "s2", "propagate") and runs_protocol(cfg, "lite", "box")
    assert not runs_protocol(cfg, "lite", "propagate")  # SAM 2's memory only
    for adaptation in ("lora", "adapter", "full", "promptfree"):
        with pytest.raises(samstudy_config.ConfigError, match=f"adaptation '{adaptation}' is not built for SAM 2"):
            study_config(tmp_path, models={"sam2": sam2}, methods={"m": {"model": "sam2", "adaptation": adaptation}})
    with pytest.raises(samstudy_config.ConfigError, match="needs a 'checkpoint' path"):
        study_config(tmp_path, models={"sam2": {"type": "medsam2"}}, methods={"m": {"model": "sam2"}})
    with pytest.raises(samstudy_config.ConfigError, match="image_size applies to the SAM 2 types only"):
        study_config(
            tmp_path, models={"lite": {"type": "litemedsam", "image_size": 256}}, methods={"m": {"model": "lite"}}
        )


def test_propagate_prompts_from_another_run_are_its_3d_boxes(study):
    """The automatic source: `prompts.derived: {name: {from: <run>, kind: propagate}}` stores the source
    run's 3D boxes as `propagate` prompts (inference then runs the propagate protocol on them)."""
    from samstudy.cases import eval_cases, load_dataset_table
    from samstudy.infer import write_prediction
    from samstudy.preprocess import load_preprocessed
    from samstudy.prompts import derive_prompts

    cfg, layout = study
    rows = load_dataset_table(layout, "phantom")[0].set_index("case_id")
    case = eval_cases(layout, "phantom")[0]
    pred = np.zeros_like(load_preprocessed(layout, "phantom", case)["labels"])
    pred[2:5, 5:9, 10:20] = 2  # unrelated to the ground truth
    for other in eval_cases(layout, "phantom"):
        axis = int(load_preprocessed(layout, "phantom", other)["axis"])  # written as nnU-Net writes them
        write_prediction(layout.prediction("nnunet_2d", "phantom", other), pred, axis, rows.loc[other])
    spec = {"from": "nnunet_2d", "kind": "propagate"}
    artifact = derive_prompts(layout, "phantom", "auto_propagate", spec, {"components": "union"}, 7)
    assert artifact["kind"] == "propagate" and artifact["source"] == "run:nnunet_2d"
    assert artifact["cases"][case] == [{"label": 2, "box3d": [10, 5, 2, 19, 8, 4]}]
