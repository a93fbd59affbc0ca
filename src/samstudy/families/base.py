"""What every model family provides: how its official code turns a slice and a prompt into a mask.

A family is the unit of faithfulness: its builder, its input transform (resize library and
interpolation, intensity normalisation, padding), how prompts are scaled into the model frame, how the
decoder's low-res logits go back to the native slice and where they are thresholded, and its rule for
propagating a 3D box slice by slice. Each family file cites the official code it follows.

A family's `Predictor` (segment-anything's `SamPredictor` role) is the only caller of its image encoder,
prompt encoder and mask decoder: inference, decoder training, prompt-free inference and the embedding
cache all go through it. It has one or both capabilities:
- `slice`: official input transform -> encoder (`encode`: what the embedding cache stores) -> prompts ->
  decoder (`decode`) -> logits back to the native slice -> threshold;
- `volume`: a session over one case (`volume_session`: the image set once; interactions (a mask, a box,
  clicks) on slices; the mask propagated through the volume). SAM 2's video predictor has it
  (samstudy.families.sam2_video); nnInteractive, SAM-Med3D and SAM 3's tracker are of this kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from samstudy.families import SLICE  # the capabilities: the torch-free registry's names


class CapabilityError(ValueError):
    """A protocol asks a family's predictor for a capability it does not have."""


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey -> (H, W, 3) by repetition (as the official scripts do); RGB as it is."""
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=-1)


class Family:
    """One model family. Subclasses set the attributes and implement the transforms; `predictor_class`
    (set below) runs them with the family's model."""

    name: str = ""
    input_size: int = 0  # the square side the image encoder takes
    threshold: float = 0.0  # foreground where the native score (`postprocess`) is > threshold
    transform_id: str = ""  # names the input transform and its version: part of the embedding cache key
    official: str = ""  # the official files this family's behaviour follows (README, provenance)
    # The state-dict names of the mask decoder that decoder training trains (every adaptation trains it),
    # less the sub-prefixes whose outputs the embedding cache holds (training them would stale the cache).
    decoder_prefix: str = "mask_decoder."
    decoder_cached: tuple[str, ...] = ()

    predictor_class: type[Predictor]  # set after Predictor is defined (below)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this family's predictor can do (`slice`, `volume`)."""
        return self.predictor_class.capabilities

    def predictor(self, sam: torch.nn.Module) -> Predictor:
        """This family's predictor over a built (and loaded) model."""
        return self.predictor_class(self, sam)

    def packaged_checkpoint(self) -> Path | None:
        """The weights that ship with samstudy (used when a model entry gives no checkpoint), or None."""
        return None

    def trains_decoder_tensor(self, name: str) -> bool:
        """Whether a state-dict name is a mask-decoder tensor that adaptation trains (`decoder_prefix`, less
        `decoder_cached`)."""
        return name.startswith(self.decoder_prefix) and not name.startswith(self.decoder_cached)

    def build(self) -> torch.nn.Module:
        """The segment_anything `Sam` module with this family's architecture (random init)."""
        raise NotImplementedError

    def build_random(self, seed: int) -> torch.nn.Module:
        """`build` with random weights drawn from `seed` (`random_init: true`): the same weights in every
        process and on every machine; the caller's random state is left as it was (fork_rng)."""
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.build()

    def configured(self, model_cfg: dict) -> Family:
        """The family as a model entry configures it (SAM 2: its image size); most have nothing to set."""
        return self

    def load_state(self, sam: torch.nn.Module, state: dict) -> None:
        """Load a checkpoint's state dict into the built module; every key must fit."""
        sam.load_state_dict(state, strict=True)

    def resized_shape(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The image's size inside the model input frame (before padding)."""
        raise NotImplementedError

    def image_to_input(self, slices: np.ndarray) -> torch.Tensor:
        """uint8 slices (n, H, W) grey or (n, H, W, 3) RGB -> the encoder input (n, 3, S, S) float32."""
        raise NotImplementedError

    def boxes_to_model(self, boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """XYXY boxes (N, 4) in native slice pixels -> the model input frame (float32)."""
        raise NotImplementedError

    def points_to_model(self, xy: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """XY points (..., 2) in native slice pixels -> the model input frame (float32)."""
        raise NotImplementedError

    def postprocess(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Decoder logits (N, 1, L, L) -> native scores (N, H, W); foreground where score > threshold."""
        raise NotImplementedError

    def mask_prompt(self, low_res: torch.Tensor) -> torch.Tensor:
        """The decoder's low-res logits as the official predictor returns them for the next round's mask
        prompt (iterative correction); `postprocess` reads the logits themselves. SAM's are unchanged."""
        return low_res

    def logits_to_native(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Decoder logits (N, C, L, L) -> logits (N, C, H, W) in the native slice: the geometry of
        `postprocess` (its resizes and crop) without its score function (sigmoid), so that C channels
        can compete in a softmax/argmax (the prompt-free method's classes)."""
        raise NotImplementedError

    def mask_to_low_res(self, mask: np.ndarray, out_size: int) -> np.ndarray:
        """A native binary mask (H, W) -> the decoder's low-res frame (out_size square), float32 0/1:
        the training target, aligned with what `postprocess` inverts."""
        raise NotImplementedError

    def propagation_box(self, previous: np.ndarray, hw: tuple[int, int], margin: int, value: int) -> np.ndarray | None:
        """3D box propagation: the model-frame box for a slice from the previous slice's predicted mask of
        the object (bool (H, W)), or None when the mask is empty (the caller then falls back to the 3D
        box's own xy box). `value` is the object's 1-based position, the value the official code writes
        into the mask it resizes; `margin` is in pixels of the 256-pixel decoder frame.

        Default (SAM, MedSAM: their official code has no 3D rule): LiteMedSAM's rule in this family's
        frame: the previous mask's bounding box in the model frame, grown by `margin` pixels at the
        256-pixel scale, clipped to the frame.
        """
        if not previous.any():
            return None
        rows = np.flatnonzero(previous.any(axis=1))
        cols = np.flatnonzero(previous.any(axis=0))
        box = self.boxes_to_model(np.array([[cols[0], rows[0], cols[-1], rows[-1]]]), hw)[0]
        grow = margin * self.input_size / 256.0
        size = float(self.input_size)
        return np.array(
            [max(0.0, box[0] - grow), max(0.0, box[1] - grow), min(size, box[2] + grow), min(size, box[3] + grow)],
            dtype=np.float32,
        )

    def describe(self) -> dict:
        """What provenance records about how this family is run."""
        return {
            "family": self.name,
            "transform": self.transform_id,
            "threshold": self.threshold,
            "official": self.official,
        }


class VolumeSession:
    """A session over one case (the volume capability): the image is set when the predictor opens the
    session; an object is tracked through a range of slices from interactions on one of them, and its
    mask comes back slice by slice. A family implements the interactions its model takes."""

    def track(self, first: int, last: int) -> None:
        """Start a new object, tracked through slices first..last (both included)."""
        raise NotImplementedError

    def add_mask(self, index: int, mask: np.ndarray) -> torch.Tensor:
        """A mask (bool (H, W)) of the object on slice `index`; returns that slice's logits (H, W)."""
        raise NotImplementedError(f"{type(self).__name__} takes no mask interaction")

    def add_box(self, index: int, box: np.ndarray) -> torch.Tensor:
        """An XYXY box (native pixels) of the object on slice `index`; returns that slice's logits (H, W)."""
        raise NotImplementedError(f"{type(self).__name__} takes no box interaction")

    def add_points(self, index: int, xy: np.ndarray, labels: np.ndarray) -> torch.Tensor:
        """Clicks (native XY pixels, 1 positive / 0 negative) on slice `index`; returns its logits (H, W)."""
        raise NotImplementedError(f"{type(self).__name__} takes no click interaction")

    def propagate(self, reverse: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        """The object's logits (H, W) on each slice of its range, in order from the interaction's slice
        (towards the last slice, or the first with `reverse`)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the interactions (the image and the object's range stay)."""
        raise NotImplementedError


class Predictor:
    """A family's model behind its official transforms: the only caller of the image encoder, the prompt
    encoder and the mask decoder (segment-anything's `SamPredictor` role). This one has the slice
    capability and works on any module with segment_anything's `image_encoder` / `prompt_encoder` /
    `mask_decoder` interface (SAM, MedSAM, LiteMedSAM; SAM 2 through its wrappers)."""

    capabilities: frozenset[str] = frozenset({SLICE})

    def __init__(self, family: Family, sam: torch.nn.Module) -> None:
        self.family = family
        self.sam = sam

    @property
    def device(self) -> torch.device:
        return next(self.sam.parameters()).device

    @property
    def embedding_size(self) -> int:
        """The side of the image embedding (and of the prompt encoder's dense embedding)."""
        return int(self.sam.prompt_encoder.image_embedding_size[0])

    @property
    def low_res_size(self) -> int:
        """The side of the decoder's low-res logits (4 x the embedding's)."""
        return 4 * self.embedding_size

    # --- slice capability: transform -> encoder (the embedding cache) -> decoder -> native slice --------

    def image_to_input(self, slices: np.ndarray) -> torch.Tensor:
        """uint8 slices (n, H, W) or (n, H, W, 3) -> the encoder input (the family's official transform)."""
        return self.family.image_to_input(slices)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder input (n, 3, S, S) -> image embeddings (what the embedding cache stores)."""
        return self.sam.image_encoder(x)

    def encode_images(self, images: list[np.ndarray], device) -> torch.Tensor:
        """Image embeddings of uint8 slices run through the transform and the encoder in one batch (with
        gradients when the encoder is being trained)."""
        x = torch.cat([self.family.image_to_input(image[None]) for image in images]).to(device)
        return self.sam.image_encoder(x)

    def use_channels_last(self) -> None:
        """Put the encoder's weights in channels-last memory order (faster convolutions; same values)."""
        self.sam.image_encoder.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def decode(
        self,
        embedding: np.ndarray,
        prompts: list[dict],
        hw: tuple[int, int],
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N prompts of the same form on one slice: (low-res logits (N, 1, L, L), native scores (N, H, W)).

        A prompt has a `box` and/or `points` + `point_labels` in native slice pixels (the family scales them
        into its model frame, as its official code does), or a `model_box` already in the model frame (3D
        propagation); all N must have the same form and number of points. Foreground is where the score is >
        `family.threshold`. `mask_input` (N, 1, L, L), L = low_res_size, is SAM's mask prompt: the
        previous round's low-res logits (iterative correction). A single point with nothing else is
        ambiguous, so it uses SAM's three-mask output and keeps the mask with the highest predicted IoU (as
        SAM's authors recommend); every other prompt uses the single-mask output (`multimask_output=False`,
        as the official box inference). The low-res logits are returned on CPU.
        """
        forms = {("box" in p or "model_box" in p, len(p.get("points", ()))) for p in prompts}
        if len(forms) != 1:
            raise ValueError(f"one decoder call needs prompts of one form, got {sorted(forms)}")
        has_box, n_points = forms.pop()
        family = self.family
        device = self.device
        emb = torch.from_numpy(np.asarray(embedding, dtype=np.float32))[None].to(device)
        boxes = points = masks = None
        if has_box:
            framed = [
                p["model_box"] if "model_box" in p else family.boxes_to_model(np.array([p["box"]]), hw)[0]
                for p in prompts
            ]
            boxes = torch.from_numpy(np.asarray(framed, dtype=np.float32)).to(device)
        if n_points:
            xy = np.array([p["points"] for p in prompts], dtype=np.float64)  # (N, k, 2)
            coords = torch.from_numpy(family.points_to_model(xy, hw)).to(device)
            point_labels = torch.tensor([p["point_labels"] for p in prompts], dtype=torch.int, device=device)
            points = (coords, point_labels)
        if mask_input is not None:
            masks = mask_input.to(device=device, dtype=torch.float32)
        multimask = not has_box and n_points == 1 and masks is None
        sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
        low_res, iou = self.sam.mask_decoder(
            image_embeddings=emb,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        if multimask:
            best = iou.argmax(dim=1)
            low_res = low_res[torch.arange(low_res.shape[0]), best][:, None]
        low_res = low_res.float()
        return family.mask_prompt(low_res).cpu(), family.postprocess(low_res, hw).cpu()

    def train_logits(self, embedding: torch.Tensor, boxes: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        """Decoder training's forward: low-res logits (N, L, L) of N XYXY boxes (native pixels) on one slice
        embedding (C, h, w), single-mask output, gradients through the decoder (the prompt encoder frozen)."""
        box = torch.from_numpy(self.family.boxes_to_model(boxes, hw)).to(embedding.device)
        with torch.no_grad():
            sparse, dense = self.sam.prompt_encoder(points=None, boxes=box, masks=None)
        low_res, _ = self.sam.mask_decoder(
            image_embeddings=embedding[None],
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low_res[:, 0]

    def promptfree_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Image embeddings (B, C, h, w) -> logits of every class (B, n_classes + 1, L, L), channel 0 the
        background, with no prompt. SAMed `segment_anything/modeling/sam.py` `forward_train` (followed in
        SAMed_h/segment_anything/modeling/sam.py lines 60-72, commit 1f960e6): `prompt_encoder(points=None,
        boxes=None, masks=None)` (an empty sparse embedding (1, 0, C), the dense one the no-mask embedding),
        the batch of image embeddings decoded against that single empty prompt (the decoder's batch broadcast
        over the image batch, as there), multimask output keeping every mask: SAMed's MaskDecoder.forward
        returns all n_classes + 1 masks (its `segment_anything/modeling/mask_decoder.py` lines 102-111, the
        official mask selection commented out), which is `predict_masks` of the official decoder."""
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=None, masks=None)
        masks, _ = self.sam.mask_decoder.predict_masks(
            image_embeddings=embeddings,
            image_pe=self.sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return masks

    def logits_to_native(self, low_res: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Decoder logits (N, C, L, L) -> logits (N, C, H, W) in the native slice (the family's geometry)."""
        return self.family.logits_to_native(low_res, hw)

    def foreground(self, scores: torch.Tensor) -> torch.Tensor:
        """Native scores -> the object's mask: where the score is > the family's threshold."""
        return scores > self.family.threshold

    # --- volume capability -------------------------------------------------------------------------------

    def volume_session(self, slices: np.ndarray) -> VolumeSession:
        """A session over one case's uint8 slices (n, H, W) (the volume capability)."""
        raise CapabilityError(
            f"model family {self.family.name} has no volume capability (it has: {', '.join(sorted(self.capabilities))})"
        )


Family.predictor_class = Predictor
