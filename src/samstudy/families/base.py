"""What every model family provides: how its official code turns a slice and a prompt into a mask.

A family is the unit of faithfulness: its builder, its input transform (resize library and
interpolation, intensity normalisation, padding), how prompts are scaled into the model frame, how the
decoder's low-res logits go back to the native slice and where they are thresholded, and its rule for
propagating a 3D box slice by slice. Each family file cites the official code it follows.
"""

from __future__ import annotations

import numpy as np
import torch


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) grey -> (H, W, 3) by repetition (as the official scripts do); RGB as it is."""
    return image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=-1)


class Family:
    """One model family. Subclasses set the attributes and implement the transforms."""

    name: str = ""
    input_size: int = 0  # the square side the image encoder takes
    threshold: float = 0.0  # foreground where the native score (`postprocess`) is > threshold
    transform_id: str = ""  # names the input transform and its version: part of the embedding cache key
    official: str = ""  # the official files this family's behaviour follows (README, provenance)

    def build(self) -> torch.nn.Module:
        """The segment_anything `Sam` module with this family's architecture (random init)."""
        raise NotImplementedError

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
