"""Independent transcription of the authors' official inference code, for testing samstudy against it.

Nothing here is imported from ``samstudy``.  Every step cites the official file, the commit the code was
read at, and line numbers.  Sources (as stored in the public code index):

  LITE = bowang-lab/MedSAM  CVPR24_LiteMedSAM_infer.py  @ 2a5a0556cabee8a62c8c1ec7e7cd821909adcb0c
         (the version whose 3D loop includes z_max and z_min: L444 ``z_max = min(z_max+1, D)``,
          L482 ``z_min = max(-1, z_min-1)``)
  PRE  = bowang-lab/MedSAM  pre_CT_MR.py           @ 18937063350b5ebfb2f2a457d8eee61d61bc5eea
  MED  = bowang-lab/MedSAM  MedSAM_Inference.py    @ 3e56a525427792509c9597bb9dfcc785d7783bd6
  SAM  = facebookresearch/segment-anything  segment_anything/predictor.py
         @ 571794162e0887c15d12b809505b902c7bf8b4db (same text as the installed segment_anything 1.0);
         used as is, through ``SamPredictor``.

Conventions: numpy in, numpy out; all torch work under ``torch.no_grad()`` on the model's device.
``sam`` is a ``segment_anything.modeling.Sam`` in eval mode.  For the MedSAM / LiteMedSAM paths the
official scripts call ``image_encoder`` directly on the [0, 1] tensor: ``sam.preprocess`` (pixel mean/std,
padding) is deliberately NOT applied.  Official code writes label ``idx = 1..N`` for the N-th box; here
the caller passes the label values (``labels[i]`` for ``boxes[i]``); boxes are applied in order and a
later mask overwrites an earlier one.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from skimage import transform

# ----------------------------------------------------------------------------------------------------
# Image intensity preprocessing: PRE (pre_CT_MR.py), function ``preprocess``
# ----------------------------------------------------------------------------------------------------


def ct_preprocess(volume: np.ndarray, level: float, width: float) -> np.ndarray:
    """CT windowing, PRE L141-L148 and L162."""
    lower_bound = level - width / 2  # PRE L142
    upper_bound = level + width / 2  # PRE L143
    image_data_pre = np.clip(volume, lower_bound, upper_bound)  # PRE L144
    # PRE L145-L149: min-max of the *clipped volume* (not of the window), times 255.0
    image_data_pre = (
        (image_data_pre - np.min(image_data_pre)) / (np.max(image_data_pre) - np.min(image_data_pre)) * 255.0
    )
    return np.uint8(image_data_pre)  # PRE L162: np.uint8 truncates (no rounding)


def mr_preprocess(volume: np.ndarray) -> np.ndarray:
    """MR percentile clipping, PRE L150-L160 and L162."""
    # PRE L151-L153: 0.5 / 99.5 percentiles over the voxels > 0 only
    lower_bound, upper_bound = np.percentile(volume[volume > 0], 0.5), np.percentile(volume[volume > 0], 99.5)
    image_data_pre = np.clip(volume, lower_bound, upper_bound)  # PRE L154
    image_data_pre = (  # PRE L155-L159
        (image_data_pre - np.min(image_data_pre)) / (np.max(image_data_pre) - np.min(image_data_pre)) * 255.0
    )
    image_data_pre[volume == 0] = 0  # PRE L160: zero voxels of the input stay 0
    return np.uint8(image_data_pre)  # PRE L162


# ----------------------------------------------------------------------------------------------------
# LiteMedSAM helpers: LITE (CVPR24_LiteMedSAM_infer.py)
# ----------------------------------------------------------------------------------------------------


def resize_longest_side(image: np.ndarray, target_length: int = 256) -> np.ndarray:
    """LITE L91-L102."""
    oldh, oldw = image.shape[0], image.shape[1]
    scale = target_length * 1.0 / max(oldh, oldw)  # LITE L97
    newh, neww = oldh * scale, oldw * scale  # LITE L98
    neww, newh = int(neww + 0.5), int(newh + 0.5)  # LITE L99: round half up via int(x + 0.5)
    return cv2.resize(image, (neww, newh), interpolation=cv2.INTER_AREA)  # LITE L100-L102


def pad_image(image: np.ndarray, target_size: int = 256) -> np.ndarray:
    """LITE L104-L118: zero-pad bottom/right to target_size (HxWxC image, or HxW mask)."""
    h, w = image.shape[0], image.shape[1]
    padh = target_size - h
    padw = target_size - w
    if len(image.shape) == 3:  # LITE L113-L114
        return np.pad(image, ((0, padh), (0, padw), (0, 0)))
    return np.pad(image, ((0, padh), (0, padw)))  # LITE L115-L116


def get_bbox256(mask_256: np.ndarray, bbox_shift: int = 3) -> np.ndarray:
    """LITE L229-L259: box of mask>0, grown by bbox_shift, clipped to [0, W] / [0, H] (W=H=256, not 255)."""
    y_indices, x_indices = np.where(mask_256 > 0)  # LITE L246
    x_min, x_max = np.min(x_indices), np.max(x_indices)  # LITE L247
    y_min, y_max = np.min(y_indices), np.max(y_indices)  # LITE L248
    H, W = mask_256.shape  # LITE L251: the *padded* 256x256 shape
    x_min = max(0, x_min - bbox_shift)  # LITE L252
    x_max = min(W, x_max + bbox_shift)  # LITE L253
    y_min = max(0, y_min - bbox_shift)  # LITE L254
    y_max = min(H, y_max + bbox_shift)  # LITE L255
    return np.array([x_min, y_min, x_max, y_max])  # LITE L257


def resize_box_to_256(box: np.ndarray, original_size) -> np.ndarray:
    """LITE L261-L283: scale by 256 / max(H, W), each coordinate truncated with int()."""
    new_box = np.zeros_like(box)  # LITE L278 (keeps the input dtype)
    ratio = 256 / max(original_size)  # LITE L279
    for i in range(len(box)):  # LITE L280-L281
        new_box[i] = int(box[i] * ratio)
    return new_box


def _as_3c(image: np.ndarray) -> np.ndarray:
    """Grey HxW -> HxWx3 by repetition, as LITE L446-L450 / MED L115-L118 do."""
    if len(image.shape) == 2:
        return np.repeat(image[:, :, None], 3, axis=-1)
    return image


def _device(sam) -> torch.device:
    return next(sam.parameters()).device


@torch.no_grad()
def _lite_embedding(sam, img_3c: np.ndarray):
    """LITE L383-L392 (2D) == L453-L466 (3D, up) == L491-L503 (3D, down). Returns (embedding, (new_H, new_W))."""
    img_256 = resize_longest_side(img_3c, 256)  # LITE L384 / L453
    newh, neww = img_256.shape[:2]  # LITE L385 / L454
    img_256_norm = (img_256 - img_256.min()) / np.clip(  # LITE L386-L388: global min-max over all channels
        img_256.max() - img_256.min(), a_min=1e-8, a_max=None
    )
    img_256_padded = pad_image(img_256_norm, 256)  # LITE L389: pad *after* normalising
    img_256_tensor = torch.tensor(img_256_padded).float().permute(2, 0, 1).unsqueeze(0).to(_device(sam))  # L390
    image_embedding = sam.image_encoder(img_256_tensor)  # LITE L392 (no sam.preprocess)
    return image_embedding, (newh, neww)


@torch.no_grad()
def _lite_logits(sam, img_embed, box_256, new_size, original_size) -> torch.Tensor:
    """LITE medsam_inference L287-L314 + MedSAM_Lite.postprocess_masks L155-L184: (1,1,H,W) logits."""
    box_torch = torch.as_tensor(box_256[None, None, ...], dtype=torch.float, device=img_embed.device)  # L300
    sparse_embeddings, dense_embeddings = sam.prompt_encoder(points=None, boxes=box_torch, masks=None)  # L302
    low_res_logits, _iou = sam.mask_decoder(  # LITE L307-L313
        image_embeddings=img_embed,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse_embeddings,
        dense_prompt_embeddings=dense_embeddings,
        multimask_output=False,
    )
    masks = low_res_logits[..., : new_size[0], : new_size[1]]  # LITE L175: crop the 256x256 logits to new size
    return F.interpolate(  # LITE L177-L182: bilinear straight to the original size
        masks, size=(original_size[0], original_size[1]), mode="bilinear", align_corners=False
    )


@torch.no_grad()
def _lite_seg(sam, img_embed, box_256, new_size, original_size) -> np.ndarray:
    """LITE L315-L318: sigmoid, squeeze, > 0.5, uint8."""
    low_res_pred = torch.sigmoid(_lite_logits(sam, img_embed, box_256, new_size, original_size))  # L316
    low_res_pred = low_res_pred.squeeze().cpu().numpy()  # LITE L317
    return (low_res_pred > 0.5).astype(np.uint8)  # LITE L318


# ----------------------------------------------------------------------------------------------------
# LiteMedSAM public functions
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def litemedsam_logits_2d(sam, image: np.ndarray, box) -> np.ndarray:
    """Pre-sigmoid native-size (H, W) float32 logits for one box, LITE 2D path L374-L396."""
    img_3c = _as_3c(image)
    H, W = img_3c.shape[:2]  # LITE L379
    image_embedding, new_size = _lite_embedding(sam, img_3c)
    box256 = resize_box_to_256(np.asarray(box), original_size=(H, W))[None, ...]  # LITE L395-L396
    logits = _lite_logits(sam, image_embedding, box256, new_size, (H, W))
    return logits[0, 0].cpu().numpy().astype(np.float32)


@torch.no_grad()
def litemedsam_2d(sam, image: np.ndarray, boxes, labels) -> np.ndarray:
    """LITE MedSAM_infer_npz_2D, L374-L399. image uint8 (H,W) or (H,W,3); boxes (N,4) XYXY native pixels."""
    img_3c = _as_3c(image)
    assert np.max(img_3c) < 256, "input data should be in range [0, 255]"  # LITE L378
    H, W = img_3c.shape[:2]  # LITE L379
    segs = np.zeros(img_3c.shape[:2], dtype=np.uint8)  # LITE L381
    image_embedding, new_size = _lite_embedding(sam, img_3c)  # LITE L383-L392 (once per image)
    for box, label in zip(np.asarray(boxes), labels, strict=True):  # LITE L394 (label replaces idx)
        box256 = resize_box_to_256(box, original_size=(H, W))  # LITE L395
        box256 = box256[None, ...]  # LITE L396: (1, 4)
        medsam_mask = _lite_seg(sam, image_embedding, box256, new_size, (H, W))  # LITE L397
        segs[medsam_mask > 0] = label  # LITE L398: later boxes overwrite
    return segs


@torch.no_grad()
def litemedsam_3d(sam, volume: np.ndarray, boxes3d, labels) -> np.ndarray:
    """LITE MedSAM_infer_npz_3D, L427-L514. volume uint8 (D,H,W); boxes3d (N,6)
    [x_min, y_min, z_min, x_max, y_max, z_max], both ends inclusive.

    The per-object temp volume stores the official idx = 1..N (L435, L478/L513): the stored value matters,
    because the previous slice's mask is resized with INTER_AREA (L471/L506) on its uint8 values, so which
    boundary pixels stay > 0 depends on it. The final volume gets the caller's label for box idx.
    Slice embeddings are cached within the call (the official recomputes them per object; same values).
    """
    img_3D = volume
    segs = np.zeros_like(img_3D, dtype=np.uint8)  # LITE L432
    cache: dict = {}

    def embed(z):  # LITE L446-L466 / L484-L503
        if z not in cache:
            img_3c = _as_3c(img_3D[z, :, :])  # LITE L446-L450
            cache[z] = _lite_embedding(sam, img_3c)
        return cache[z]

    def prev_box(pre_seg, mid_slice_bbox_2d, H, W):  # LITE L470-L476 == L505-L511
        pre_seg256 = resize_longest_side(pre_seg)  # INTER_AREA on the uint8 label mask
        if np.max(pre_seg256) > 0:
            pre_seg256 = pad_image(pre_seg256)
            return get_bbox256(pre_seg256)  # bbox_shift=3
        return resize_box_to_256(mid_slice_bbox_2d, original_size=(H, W))  # empty -> the middle-slice box

    for idx, (box3D, label) in enumerate(zip(np.asarray(boxes3d), labels, strict=True), start=1):  # LITE L435
        segs_3d_temp = np.zeros_like(img_3D, dtype=np.uint8)  # LITE L436
        x_min, y_min, z_min, x_max, y_max, z_max = box3D  # LITE L437
        assert z_min < z_max, f"z_min should be smaller than z_max, but got {z_min=} and {z_max=}"  # LITE L438
        mid_slice_bbox_2d = np.array([x_min, y_min, x_max, y_max])  # LITE L439
        z_middle = int((z_max - z_min) / 2 + z_min)  # LITE L440

        # middle slice up to z_max (inclusive), LITE L444-L478
        z_max = min(z_max + 1, img_3D.shape[0])  # LITE L444
        for z in range(z_middle, z_max):  # LITE L445
            H, W = img_3D.shape[1], img_3D.shape[2]  # LITE L451
            image_embedding, (new_H, new_W) = embed(z)
            if z == z_middle:  # LITE L467-L468
                box_256 = resize_box_to_256(mid_slice_bbox_2d, original_size=(H, W))
            else:  # LITE L469-L476: box from the slice below (z-1)
                box_256 = prev_box(segs_3d_temp[z - 1, :, :], mid_slice_bbox_2d, H, W)
            img_2d_seg = _lite_seg(sam, image_embedding, box_256, [new_H, new_W], [H, W])  # LITE L477
            segs_3d_temp[z, img_2d_seg > 0] = idx  # LITE L478

        # middle-1 down to z_min (inclusive), LITE L482-L513
        z_min = max(-1, z_min - 1)  # LITE L482
        for z in range(z_middle - 1, z_min, -1):  # LITE L483
            H, W = img_3D.shape[1], img_3D.shape[2]  # LITE L489
            image_embedding, (new_H, new_W) = embed(z)
            box_256 = prev_box(segs_3d_temp[z + 1, :, :], mid_slice_bbox_2d, H, W)  # LITE L505-L511
            img_2d_seg = _lite_seg(sam, image_embedding, box_256, [new_H, new_W], [H, W])  # LITE L512
            segs_3d_temp[z, img_2d_seg > 0] = idx  # LITE L513
        segs[segs_3d_temp > 0] = label  # LITE L514 (writes idx; the caller's label here): later objects overwrite
    return segs


# ----------------------------------------------------------------------------------------------------
# MedSAM (ViT-B, 1024): MED (MedSAM_Inference.py)
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def _medsam_embedding(sam, image: np.ndarray):
    """MED L114-L136. Returns (embedding, H, W)."""
    img_3c = _as_3c(image)  # MED L114-L118
    H, W, _ = img_3c.shape  # MED L119
    img_1024 = transform.resize(  # MED L121-L123: bicubic, preserve_range, anti_aliasing; astype truncates
        img_3c, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True
    ).astype(np.uint8)
    img_1024 = (img_1024 - img_1024.min()) / np.clip(  # MED L124-L126: global min-max to [0, 1]
        img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None
    )
    img_1024_tensor = torch.tensor(img_1024).float().permute(2, 0, 1).unsqueeze(0).to(_device(sam))  # MED L128-L130
    image_embedding = sam.image_encoder(img_1024_tensor)  # MED L136 (no sam.preprocess)
    return image_embedding, H, W


@torch.no_grad()
def _medsam_prob(sam, img_embed, box, H, W) -> np.ndarray:
    """MED L132-L134 (box scaling) + medsam_inference L44-L70: (H, W) probabilities."""
    box_np = np.array([box])  # MED L132: (1, 4)
    box_1024 = box_np / np.array([W, H, W, H]) * 1024  # MED L134: float, no rounding
    box_torch = torch.as_tensor(box_1024, dtype=torch.float, device=img_embed.device)  # MED L45
    if len(box_torch.shape) == 2:  # MED L46-L47
        box_torch = box_torch[:, None, :]  # (B, 1, 4)
    sparse_embeddings, dense_embeddings = sam.prompt_encoder(points=None, boxes=box_torch, masks=None)  # L49
    low_res_logits, _ = sam.mask_decoder(  # MED L54-L60
        image_embeddings=img_embed,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse_embeddings,
        dense_prompt_embeddings=dense_embeddings,
        multimask_output=False,
    )
    low_res_pred = torch.sigmoid(low_res_logits)  # MED L62: sigmoid *before* upsampling
    low_res_pred = F.interpolate(low_res_pred, size=(H, W), mode="bilinear", align_corners=False)  # MED L64-L69
    return low_res_pred.squeeze().cpu().numpy()  # MED L70 (no crop: the 1024 resize is not aspect-preserving)


@torch.no_grad()
def medsam_prob_2d(sam, image: np.ndarray, box) -> np.ndarray:
    """Pre-threshold native-size (H, W) float32 probabilities for one box (MED)."""
    image_embedding, H, W = _medsam_embedding(sam, image)
    return _medsam_prob(sam, image_embedding, np.asarray(box), H, W).astype(np.float32)


@torch.no_grad()
def medsam_2d(sam, image: np.ndarray, boxes, labels) -> np.ndarray:
    """MED, one embedding per image, then each box in order; later overwrites. Returns uint8 (H, W)."""
    image_embedding, H, W = _medsam_embedding(sam, image)
    segs = np.zeros((H, W), dtype=np.uint8)
    for box, label in zip(np.asarray(boxes), labels, strict=True):
        medsam_seg = (_medsam_prob(sam, image_embedding, box, H, W) > 0.5).astype(np.uint8)  # MED L71
        segs[medsam_seg > 0] = label
    return segs


# ----------------------------------------------------------------------------------------------------
# SAM: SamPredictor itself (SAM predictor.py; set_image L34-L60, predict L92-L167, threshold L240-L241)
# ----------------------------------------------------------------------------------------------------


def _sam_predictor(sam, image: np.ndarray) -> SamPredictor:
    predictor = SamPredictor(sam)
    predictor.set_image(np.ascontiguousarray(_as_3c(image)).astype(np.uint8))  # uint8 HxWx3 RGB
    return predictor


@torch.no_grad()
def sam_logits_2d(sam, image: np.ndarray, box) -> np.ndarray:
    """SamPredictor.predict(box=..., multimask_output=False, return_logits=True)[0][0], (H, W) float32."""
    masks, _, _ = _sam_predictor(sam, image).predict(box=np.asarray(box), multimask_output=False, return_logits=True)
    return masks[0].astype(np.float32)


@torch.no_grad()
def sam_2d(sam, image: np.ndarray, boxes, labels) -> np.ndarray:
    """SamPredictor boolean masks (logits > sam.mask_threshold = 0.0), boxes in order, later overwrites."""
    predictor = _sam_predictor(sam, image)
    segs = np.zeros(image.shape[:2], dtype=np.uint8)
    for box, label in zip(np.asarray(boxes), labels, strict=True):
        masks, _, _ = predictor.predict(box=box, multimask_output=False)
        segs[masks[0]] = label
    return segs
