"""Each model family against a reference of its official code (tests/official_reference.py, a separate
transcription of the authors' scripts; SamPredictor itself for SAM), same weights on both sides, on
odd-sized grey and RGB slices with several labels: LiteMedSAM with its real weights, SAM and MedSAM with
small random ViTs (their checkpoints are user paths)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samstudy.embed import encode
from samstudy.families import family_of
from samstudy.models import LoadedModel, load_model
from samstudy.preprocess import clip_percentiles, window_ct
from samstudy.prompts import tight_box, tight_box3d
from samstudy.protocols.base import assemble, decode
from samstudy.protocols.box3d import predict_box3d
from samstudy.protocols.static import predict_slices
from samstudy.synthetic import phantom, phantom2d
from tests import official_reference as official


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _ct_slice(shape_xy=(229, 173), seed=3) -> tuple[np.ndarray, np.ndarray]:
    """A grey CT phantom slice (H=173, W=229) with liver, spleen and kidney, as MedSAM prepares CT."""
    image, labels = phantom(np.random.default_rng(seed), (*shape_xy, 9), 20.0)
    return official.ct_preprocess(image, 40, 400)[4], labels[4]


def _rgb_slice(shape_xy=(229, 173), seed=1) -> tuple[np.ndarray, np.ndarray]:
    return phantom2d(np.random.default_rng(seed), shape_xy)


def _mri_slice() -> tuple[np.ndarray, np.ndarray]:
    """A real MRI slice: the MNI152 T1 template nilearn ships (2 mm: 99 x 117), grey/white matter and CSF."""
    from samstudy.builtin import mni152_volumes

    t1, labels, _ = mni152_volumes(2, None, 0.5)
    s = t1.shape[2] // 2 + 5  # through the ventricles
    return official.mr_preprocess(t1)[:, :, s], labels[:, :, s]


def _boxes(labels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    values = [int(v) for v in np.unique(labels) if v != 0]
    return np.array([tight_box(labels == v) for v in values]), values


def _samstudy_2d(model: LoadedModel, image: np.ndarray, boxes: np.ndarray, values: list[int]):
    """samstudy's path: encoder through the (fp16) cache format, stored box prompts, assemble."""
    hw = image.shape[:2]
    emb = encode(model, image[None], batch_size=1, precision="fp32")[0]
    prompts = [{"slice": 0, "label": v, "box": [int(c) for c in b]} for b, v in zip(boxes, values, strict=True)]
    predictions = predict_slices(model, {0: emb}, prompts, hw, "case")
    seg = assemble((1, *hw), predictions, model.family.threshold)[0]
    return seg, [scores for _, scores in predictions[0]]


def test_intensities_are_exactly_medsams():
    image, _ = phantom(np.random.default_rng(0), (37, 29, 5), 20.0)
    assert np.array_equal(window_ct(image, 40, 400), official.ct_preprocess(image, 40, 400))
    mri = np.random.default_rng(0).gamma(2.0, 300.0, size=(7, 23, 19)).astype(np.float32)
    mri[:, :3] = 0  # background
    assert np.array_equal(clip_percentiles(mri, 0.5, 99.5), official.mr_preprocess(mri))


@pytest.fixture(scope="module")
def litemedsam():
    torch.set_num_threads(1)
    return load_model({"type": "litemedsam"})  # the real weights


def _small_ct_slice() -> tuple[np.ndarray, np.ndarray]:
    """61 x 77: enlarged ~3.3x to 256, where INTER_AREA (close to pixel replication) and a bilinear
    resize differ most (the default study's phantom is 64 x 64)."""
    return _ct_slice((77, 61), seed=4)


@pytest.mark.parametrize(
    "make",
    [_ct_slice, _small_ct_slice, _rgb_slice, _mri_slice],
    ids=["ct-grey-173x229", "ct-grey-61x77", "rgb-173x229", "mri-99x117"],
)
def test_litemedsam_2d_matches_its_official_inference(litemedsam, make):
    image, labels = make()
    boxes, values = _boxes(labels)
    assert len(values) >= 2 and image.shape[0] != image.shape[1]
    reference = official.litemedsam_2d(litemedsam.sam, image, boxes, values)
    seg, scores = _samstudy_2d(litemedsam, image, boxes, values)
    for v in values:
        assert dice(seg == v, reference == v) >= 0.98, (v, dice(seg == v, reference == v))
    assert (seg == reference).mean() > 0.995
    for box, score in zip(boxes, scores, strict=True):  # the probabilities themselves (fp16 cache aside)
        prob = torch.sigmoid(torch.from_numpy(official.litemedsam_logits_2d(litemedsam.sam, image, box)))
        assert torch.allclose(score, prob, atol=2e-2)


def test_litemedsam_box3d_matches_its_official_3d_loop(litemedsam):
    volume, labels = phantom(np.random.default_rng(5), (53, 41, 9), 20.0)
    volume = official.ct_preprocess(volume, 40, 400)
    values = [int(v) for v in np.unique(labels) if v != 0]
    assert len(values) >= 2
    boxes3d = [tight_box3d(labels == v) for v in values]
    reference = official.litemedsam_3d(litemedsam.sam, volume, boxes3d, values)
    emb = encode(litemedsam, volume, batch_size=1, precision="fp32")
    prompts = [{"label": v, "box3d": b} for v, b in zip(values, boxes3d, strict=True)]
    predictions, records = predict_box3d(litemedsam, dict(enumerate(emb)), prompts, volume.shape[1:], 3, "case")
    seg = assemble(volume.shape, predictions, litemedsam.family.threshold)
    for v in values:
        assert dice(seg == v, reference == v) >= 0.98, (v, dice(seg == v, reference == v))
    for record, box in zip(records, boxes3d, strict=True):  # every slice of the 3D box, both ends included
        assert [u["slice"] for u in record["propagation"]] == list(range(box[2], box[5] + 1))


def _tiny_vit_sam(seed: int):
    """A random SAM with the real ViT layout at 1024 (2 blocks, width 64): same transforms and frames."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=1024, patch_size=16, embed_dim=64, depth=2, num_heads=2, out_chans=256, window_size=14,
        global_attn_indexes=(1,), use_rel_pos=True,
    )  # fmt: skip
    prompt = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=512, num_heads=8),
        transformer_dim=256,
    )
    return Sam(encoder, prompt, decoder).eval()  # SAM's own pixel mean/std defaults


@pytest.mark.parametrize("make", [_ct_slice, _rgb_slice], ids=["grey-173x229", "rgb-173x229"])
def test_sam_matches_sam_predictor(make):
    torch.set_num_threads(1)
    image, labels = make()
    boxes, values = _boxes(labels)
    model = LoadedModel("sam_vit_b", _tiny_vit_sam(0), family_of("sam_vit_b"), None, "tiny")
    reference = official.sam_2d(model.sam, image, boxes, values)
    seg, scores = _samstudy_2d(model, image, boxes, values)
    for box, score in zip(boxes, scores, strict=True):
        logits = torch.from_numpy(official.sam_logits_2d(model.sam, image, box))
        assert torch.allclose(score, logits, atol=2e-3), float((score - logits).abs().max())
    for v in values:
        assert dice(seg == v, reference == v) >= 0.98
    # points go through SamPredictor's apply_coords too
    from segment_anything import SamPredictor

    predictor = SamPredictor(model.sam)
    predictor.set_image(np.ascontiguousarray(image if image.ndim == 3 else np.repeat(image[..., None], 3, -1)))
    pts, pl = np.array([[60, 70], [150, 90]]), np.array([1, 0])
    expected, _, _ = predictor.predict(point_coords=pts, point_labels=pl, multimask_output=False, return_logits=True)
    emb = encode(model, image[None], batch_size=1, precision="fp32")[0]
    prompt = {"box": [int(c) for c in boxes[0]], "points": pts.tolist(), "point_labels": pl.tolist()}
    prompt.pop("box")
    _, native = decode(model, emb, [prompt], image.shape[:2])
    assert torch.allclose(native[0], torch.from_numpy(expected[0]), atol=2e-3)


def test_medsam_matches_its_official_inference():
    torch.set_num_threads(1)
    image, labels = _ct_slice()  # non-square: MedSAM stretches it to 1024 x 1024
    boxes, values = _boxes(labels)
    model = LoadedModel("medsam_vit_b", _tiny_vit_sam(1), family_of("medsam_vit_b"), None, "tiny")
    reference = official.medsam_2d(model.sam, image, boxes, values)
    seg, scores = _samstudy_2d(model, image, boxes, values)
    for box, score in zip(boxes, scores, strict=True):
        prob = torch.from_numpy(official.medsam_prob_2d(model.sam, image, box))
        assert torch.allclose(score, prob, atol=1e-3), float((score - prob).abs().max())
    for v in values:
        assert dice(seg == v, reference == v) >= 0.98
