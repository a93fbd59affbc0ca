"""SAM ViT-B/L/H, run as segment-anything's `SamPredictor` runs it.

Official: facebookresearch/segment-anything `segment_anything/predictor.py` (set_image, predict_torch)
and `segment_anything/utils/transforms.py` (`ResizeLongestSide`, used here itself: PIL resize of the
uint8 image, which stays uint8), `segment_anything/modeling/sam.py` (preprocess: ImageNet mean/std on the
[0, 255] scale, pad bottom/right to 1024; postprocess_masks: low-res logits -> 1024 -> crop -> native
size, bilinear; mask_threshold 0.0).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch
import torch.nn.functional as F

from samstudy.families.base import Family, as_rgb

SIZE = 1024
PIXEL_MEAN = (123.675, 116.28, 103.53)  # segment_anything/modeling/sam.py, Sam.__init__ defaults
PIXEL_STD = (58.395, 57.12, 57.375)


class SAM(Family):
    threshold = 0.0  # Sam.mask_threshold
    input_size = SIZE
    transform_id = "sam/ResizeLongestSide-pil/imagenet-norm/pad/v1"
    official = "facebookresearch/segment-anything segment_anything/predictor.py, utils/transforms.py, modeling/sam.py"

    def __init__(self, variant: str = "vit_b") -> None:
        self.variant = variant
        self.name = f"sam_{variant}"

    def build(self) -> torch.nn.Module:
        # the package re-exports a function named build_sam over its submodule of that name
        build_sam = importlib.import_module("segment_anything.build_sam")
        return getattr(build_sam, f"build_sam_{self.variant}")(checkpoint=None)

    def _transform(self):
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide(SIZE)

    def resized_shape(self, hw: tuple[int, int]) -> tuple[int, int]:
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide.get_preprocess_shape(hw[0], hw[1], SIZE)

    def image_to_input(self, slices: np.ndarray) -> torch.Tensor:
        # SamPredictor.set_image: transform.apply_image(uint8 HWC RGB) -> uint8; set_torch_image ->
        # Sam.preprocess: (x - pixel_mean) / pixel_std, pad bottom/right to 1024.
        transform = self._transform()
        mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        out = []
        for image in slices:
            x = torch.as_tensor(transform.apply_image(as_rgb(image))).permute(2, 0, 1).contiguous()
            x = (x - mean) / std
            out.append(F.pad(x, (0, SIZE - x.shape[-1], 0, SIZE - x.shape[-2])))
        return torch.stack(out) if out else torch.zeros((0, 3, SIZE, SIZE))

    def boxes_to_model(self, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # SamPredictor.predict: transform.apply_boxes (float scaling of each axis by new/old size).
        return self._transform().apply_boxes(np.asarray(boxes, dtype=np.float64), hw).astype(np.float32)

    def points_to_model(self, xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # SamPredictor.predict: transform.apply_coords.
        return self._transform().apply_coords(np.asarray(xy, dtype=np.float64), hw).astype(np.float32)

    def postprocess(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # Sam.postprocess_masks: bilinear to 1024, crop the padding, bilinear to the native size; logits
        # are the scores (> mask_threshold 0.0 is foreground).
        x = F.interpolate(low_res, (SIZE, SIZE), mode="bilinear", align_corners=False)
        nh, nw = self.resized_shape(hw)
        return F.interpolate(x[..., :nh, :nw], hw, mode="bilinear", align_corners=False)[:, 0]

    def logits_to_native(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # Sam.postprocess_masks for every channel (SAM's scores are its logits: the same path).
        x = F.interpolate(low_res, (SIZE, SIZE), mode="bilinear", align_corners=False)
        nh, nw = self.resized_shape(hw)
        return F.interpolate(x[..., :nh, :nw], hw, mode="bilinear", align_corners=False)

    def mask_to_low_res(self, mask: np.ndarray, out_size: int) -> np.ndarray:
        # The image's geometry (longest side to 1024, pad), nearest-neighbour, then down to the decoder's
        # low-res frame.
        nh, nw = self.resized_shape(mask.shape)
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        m = F.pad(F.interpolate(m, size=(nh, nw), mode="nearest"), (0, SIZE - nw, 0, SIZE - nh))
        return F.interpolate(m, size=(out_size, out_size), mode="nearest")[0, 0].numpy()
