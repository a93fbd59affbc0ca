"""SAM 2 (SAM 2.1 Hiera-T/S/B+/L, and MedSAM2 checkpoints built on Hiera-T), run as the official `sam2`
package (1.1.0, facebookresearch/sam2) runs it.

2D: `SAM2ImagePredictor` (sam2/sam2_image_predictor.py) with its own `SAM2Transforms`
(sam2/utils/transforms.py): the uint8 RGB image through torchvision `ToTensor`, `Resize((S, S))` (the
whole image stretched to S x S, aspect ratio not kept, no padding) and ImageNet `Normalize` (transforms.py
lines 26-36); boxes and points normalised by W and H and scaled to S (`transform_coords`, lines 46-63; a box
is two points with labels 2 and 3, image_predictor.py lines 392-405); the decoder's low-res logits
bilinear straight to H x W (`postprocess_masks`, transforms.py line 117; no hole filling: the predictor's
defaults `max_hole_area=0`, `max_sprinkle_area=0`), foreground where > 0.0 (`mask_threshold`).

The embedding cache holds what SAM 2's decoder needs from the encoder: `forward_image`'s three feature
levels (sam2_base.py lines 467-479: the S/16 image embedding and the S/4 and S/8 high-resolution features,
already through the decoder's `conv_s0`/`conv_s1`), packed into one flat fp16 vector per slice
(`pack_features`): 8 MiB per slice at S = 1024 (32 x 256^2 + 64 x 128^2 + 256 x 64^2 values). The image
predictor adds `no_mem_embed` to the image embedding (image_predictor.py lines 117-127); the decoder
wrapper adds it when it unpacks, so the same cache entry also serves the video predictor (which does not).

3D (the volume capability, samstudy.families.sam2_video, used by the `propagate` protocol): MedSAM's
protocol for SAM 2 on volumes, through the official `SAM2VideoPredictor`.

The model is built from the package's own SAM 2.1 config files with OmegaConf and `hydra.utils.instantiate`
(the overrides `build_sam2_video_predictor` applies, build_sam.py lines 103-125), not through hydra's
global config store; `image_size` can be lowered (tests use 256 with random weights).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch
from torch import nn

from samstudy.families.base import Family, as_rgb
from samstudy.families.sam2_video import SAM2Predictor

# config model type -> the package's SAM 2.1 config file (MedSAM2's weights are SAM 2.1 Hiera-T weights)
SAM2_CONFIGS = {
    "sam2.1_hiera_t": "sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "sam2.1_hiera_l.yaml",
    "medsam2": "sam2.1_hiera_t.yaml",
}
DEFAULT_IMAGE_SIZE = 1024
RANDOM_INIT_SEED = 0  # the seed of the weights a checkpoint then replaces (the caller's random state untouched)

# build_sam.py, build_sam2_video_predictor (lines 103-125): the video predictor class and the
# postprocessing overrides (the image builder `build_sam2` applies the first three too).
VIDEO_OVERRIDES = {
    "model._target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
    "model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    "model.binarize_mask_from_pts_for_mem_enc": True,
    "model.fill_hole_area": 8,
}


def feature_shapes(image_size: int) -> list[tuple[int, int, int]]:
    """(channels, h, w) of forward_image's three levels: S/4 (conv_s0: 32), S/8 (conv_s1: 64), S/16 (256);
    the sizes SAM2ImagePredictor hard-codes for 1024 as `_bb_feat_sizes` (image_predictor.py line 62)."""
    s = image_size
    return [(32, s // 4, s // 4), (64, s // 8, s // 8), (256, s // 16, s // 16)]


def pack_features(levels: list[torch.Tensor]) -> torch.Tensor:
    """forward_image's backbone_fpn levels [(B, C_i, h_i, w_i)] -> one flat (B, D) tensor per image."""
    return torch.cat([x.flatten(1) for x in levels], dim=1)


def unpack_features(packed: torch.Tensor, image_size: int) -> list[torch.Tensor]:
    """The inverse of `pack_features`."""
    out, start = [], 0
    for c, h, w in feature_shapes(image_size):
        n = c * h * w
        out.append(packed[:, start : start + n].reshape(-1, c, h, w))
        start += n
    if start != packed.shape[1]:
        raise ValueError(f"packed SAM 2 features of {packed.shape[1]} values do not fit image size {image_size}")
    return out


class PackedImageEncoder(nn.Module):
    """The encoder side of SAM2ImagePredictor.set_image: `forward_image` (trunk, FPN neck, conv_s0/s1),
    its three levels packed per image (what the embedding cache stores)."""

    def __init__(self, sam2: nn.Module):
        super().__init__()
        self.encoder = sam2.image_encoder  # registered so that .to(memory_format=...) reaches the trunk
        self._owner = (sam2,)  # not registered: the parent module owns the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pack_features(self._owner[0].forward_image(x)["backbone_fpn"])


class PromptEncoder(nn.Module):
    """segment_anything's prompt-encoder call (points, boxes, masks) on SAM 2's prompt encoder: a box
    becomes two points labelled 2 and 3 put before the clicks (SAM2ImagePredictor._predict, lines 392-405)."""

    def __init__(self, sam2: nn.Module):
        super().__init__()
        self.encoder = sam2.sam_prompt_encoder

    @property
    def image_embedding_size(self) -> tuple[int, int]:
        return self.encoder.image_embedding_size

    def get_dense_pe(self) -> torch.Tensor:
        return self.encoder.get_dense_pe()

    def forward(self, points=None, boxes=None, masks=None):
        if boxes is not None:
            box_coords = boxes.reshape(-1, 2, 2)
            box_labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(boxes.size(0), 1)
            if points is not None:
                points = (torch.cat([box_coords, points[0]], dim=1), torch.cat([box_labels, points[1]], dim=1))
            else:
                points = (box_coords, box_labels)
        return self.encoder(points=points, boxes=None, masks=masks)


class MaskDecoder(nn.Module):
    """segment_anything's mask-decoder call on SAM 2's decoder, from packed cached features: the image
    embedding + no_mem_embed (image_predictor.py lines 119-121) and the high-resolution features
    (lines 414-430); `repeat_image` when one image is decoded with several prompts (`batched_mode`)."""

    def __init__(self, sam2: nn.Module):
        super().__init__()
        self.decoder = sam2.sam_mask_decoder
        self._owner = (sam2,)

    def forward(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output):
        sam2 = self._owner[0]
        s0, s1, embed = unpack_features(image_embeddings, sam2.image_size)
        if sam2.directly_add_no_mem_embed:
            embed = embed + sam2.no_mem_embed.view(1, -1, 1, 1)
        low_res, iou, _, _ = self.decoder(
            image_embeddings=embed,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
            multimask_output=multimask_output,
            repeat_image=sparse_prompt_embeddings.shape[0] != embed.shape[0],
            high_res_features=[s0, s1],
        )
        return low_res, iou


class SAM2Model(nn.Module):
    """The official SAM 2 model (a `SAM2VideoPredictor`, which is a `SAM2Base`: one set of weights for the
    image and the video paths) with samstudy's encoder / prompt encoder / mask decoder interface. Only
    `model` is registered: its state dict is the official one (prefixed `model.`)."""

    def __init__(self, sam2: nn.Module):
        super().__init__()
        self.model = sam2
        # plain attributes, not submodules: the weights are registered once, under `model`
        object.__setattr__(self, "image_encoder", PackedImageEncoder(sam2))
        object.__setattr__(self, "prompt_encoder", PromptEncoder(sam2))
        object.__setattr__(self, "mask_decoder", MaskDecoder(sam2))


def sam2_config(config_file: str, image_size: int):
    """The package's SAM 2.1 config (configs/sam2.1/<file>) with the video predictor's overrides and the
    image size, resolved (OmegaConf only: no hydra global state)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(str(resources.files("sam2").joinpath("configs", "sam2.1", config_file)))
    for key, value in {**VIDEO_OVERRIDES, "model.image_size": int(image_size)}.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    OmegaConf.resolve(cfg)
    return cfg


class SAM2(Family):
    threshold = 0.0  # SAM2ImagePredictor mask_threshold
    predictor_class = SAM2Predictor  # slice (image predictor) and volume (video predictor) capabilities
    # Its mask decoder, less conv_s0/conv_s1, which make the high-resolution features the embedding cache
    # holds (forward_image runs them): training them would stale the cache.
    decoder_prefix = "model.sam_mask_decoder."
    decoder_cached = ("model.sam_mask_decoder.conv_s0.", "model.sam_mask_decoder.conv_s1.")
    official = (
        "facebookresearch/sam2 1.1.0 sam2/sam2_image_predictor.py, utils/transforms.py, "
        "sam2_video_predictor.py; bowang-lab/MedSAM exp_inference/infer_SAM2_3D_npz.py (propagate)"
    )

    def __init__(self, model_type: str = "sam2.1_hiera_t", image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        if model_type not in SAM2_CONFIGS:
            raise KeyError(f"unknown SAM 2 model type '{model_type}'; known: {sorted(SAM2_CONFIGS)}")
        self.model_type = model_type
        self.name = model_type
        self.config_file = SAM2_CONFIGS[model_type]
        self.input_size = int(image_size)
        self.transform_id = f"sam2/SAM2Transforms-resize{self.input_size}/imagenet-norm/v1"
        self._transforms = None

    def configured(self, model_cfg: dict) -> SAM2:
        """This family at the model entry's `image_size` (default 1024)."""
        return SAM2(self.model_type, int(model_cfg.get("image_size") or DEFAULT_IMAGE_SIZE))

    def build(self) -> nn.Module:
        return self.build_random(RANDOM_INIT_SEED)

    def build_random(self, seed: int) -> nn.Module:
        from hydra.utils import instantiate

        cfg = sam2_config(self.config_file, self.input_size)
        with torch.random.fork_rng():  # seeded weights, the caller's random state untouched
            torch.manual_seed(seed)
            sam2 = instantiate(cfg.model, _recursive_=True)
        return SAM2Model(sam2)

    def load_state(self, sam: nn.Module, state: dict) -> None:
        # build_sam.py _load_checkpoint: the official checkpoints hold the state dict under "model" (unwrapped
        # by samstudy.models); every key must fit (strict).
        sam.model.load_state_dict(state, strict=True)

    @property
    def transforms(self):
        """The package's own SAM2Transforms at this image size (mask_threshold 0, no hole filling)."""
        if self._transforms is None:
            from sam2.utils.transforms import SAM2Transforms

            self._transforms = SAM2Transforms(resolution=self.input_size, mask_threshold=0.0)
        return self._transforms

    def resized_shape(self, hw: tuple[int, int]) -> tuple[int, int]:
        return self.input_size, self.input_size  # stretched: the whole frame is image

    def image_to_input(self, slices: np.ndarray) -> torch.Tensor:
        # SAM2ImagePredictor.set_image (line 110): self._transforms(image) on the uint8 HWC RGB array.
        out = [self.transforms(as_rgb(image)) for image in slices]
        return torch.stack(out) if out else torch.zeros((0, 3, self.input_size, self.input_size))

    def boxes_to_model(self, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # _prep_prompts (line 325): transform_boxes(box, normalize=True, orig_hw) on a float32 tensor.
        box = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
        return self.transforms.transform_boxes(box, normalize=True, orig_hw=hw).reshape(-1, 4).numpy()

    def points_to_model(self, xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        # _prep_prompts (line 317): transform_coords(coords, normalize=True, orig_hw) on a float32 tensor.
        coords = torch.as_tensor(np.asarray(xy, dtype=np.float32))
        return self.transforms.transform_coords(coords, normalize=True, orig_hw=hw).numpy()

    def postprocess(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        # _predict (line 431): postprocess_masks(low_res_masks, orig_hw): bilinear to H x W; > 0.0.
        return self.transforms.postprocess_masks(low_res, hw)[:, 0]

    def mask_prompt(self, low_res: torch.Tensor) -> torch.Tensor:
        # _predict (line 434): the returned low-res logits (a later call's mask_input) are clamped to
        # [-32, 32]; the masks come from the unclamped ones.
        return torch.clamp(low_res, -32.0, 32.0)

    def logits_to_native(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.transforms.postprocess_masks(low_res, hw)

    def mask_to_low_res(self, mask: np.ndarray, out_size: int) -> np.ndarray:
        # The image's geometry (the whole slice stretched to the square frame), nearest-neighbour.
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        return torch.nn.functional.interpolate(m, size=(out_size, out_size), mode="nearest")[0, 0].numpy()

    def describe(self) -> dict:
        return {**super().describe(), "image_size": self.input_size, "config": f"configs/sam2.1/{self.config_file}"}
