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
from samstudy.infer import decode  # noqa: E402
from samstudy.models import CheckpointError, load_model  # noqa: E402

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
