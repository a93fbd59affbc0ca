"""MedSAM (ViT-B), run as its official inference runs it.

Official: bowang-lab/MedSAM `MedSAM_Inference.py`: the whole image is stretched to 1024x1024 (aspect
ratio not kept, no padding; MedSAM was trained on images resized that way) with scikit-image's cubic
`transform.resize` and truncated to uint8, min-max normalised to [0, 1]; boxes scaled by 1024/W and
1024/H; sigmoid of the low-res logits, one bilinear resize straight to the native size, > 0.5.
Its uint8 slices come from `pre_CT_MR.py` (samstudy.preprocess).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
import torch.nn.functional as F

from samstudy.families.base import Family, as_rgb

SIZE = 1024


class MedSAM(Family):
    name = "medsam_vit_b"
    input_size = SIZE
    threshold = 0.5
    transform_id = "medsam/skimage-cubic-stretch/minmax/v1"
    official = "bowang-lab/MedSAM MedSAM_Inference.py; pre_CT_MR.py"

    def build(self) -> torch.nn.Module:
        # MedSAM_Inference.py: sam_model_registry["vit_b"]
        build_sam = importlib.import_module("segment_anything.build_sam")
        return build_sam.build_sam_vit_b(checkpoint=None)

    def resized_shape(self, hw: tuple[int, int]) -> tuple[int, int]:
        return SIZE, SIZE  # stretched: the whole frame is image

    def image_to_input(self, slices: np.ndarray) -> torch.Tensor:
        # MedSAM_Inference.py, "image preprocessing": transform.resize(img_3c, (1024, 1024), order=3,
        # preserve_range=True, anti_aliasing=True).astype(np.uint8), then min-max to [0, 1] (float64).
        from skimage import transform

        out = []
        for image in slices:
            img_1024 = transform.resize(
                as_rgb(image), (SIZE, SIZE), order=3, preserve_range=True, anti_aliasing=True
            ).astype(np.uint8)
            img_1024 = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
            out.append(torch.tensor(img_1024).float().permute(2, 0, 1))
        return torch.stack(out) if out else torch.zeros((0, 3, SIZE, SIZE))

    def boxes_to_model(self, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # box_1024 = box_np / np.array([W, H, W, H]) * 1024
        h, w = hw
        return (np.asarray(boxes, dtype=np.float64) / np.array([w, h, w, h]) * SIZE).astype(np.float32)

    def points_to_model(self, xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # MedSAM's box inference has no points; they are scaled as its boxes are.
        h, w = hw
        return (np.asarray(xy, dtype=np.float64) / np.array([w, h]) * SIZE).astype(np.float32)

    def postprocess(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # medsam_inference: sigmoid first, then one bilinear resize (align_corners=False) to (H, W).
        prob = torch.sigmoid(low_res)
        return F.interpolate(prob, size=hw, mode="bilinear", align_corners=False)[:, 0]

    def logits_to_native(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # postprocess's geometry (one bilinear resize of the whole stretched frame to H x W) applied to
        # the logits: the official code applies the sigmoid first, which a softmax over classes cannot.
        return F.interpolate(low_res, size=hw, mode="bilinear", align_corners=False)

    def mask_to_low_res(self, mask: np.ndarray, out_size: int) -> np.ndarray:
        # The same stretch as the image, nearest-neighbour.
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        return F.interpolate(m, size=(out_size, out_size), mode="nearest")[0, 0].numpy()
