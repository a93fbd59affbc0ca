"""SAM 2's volume capability: a session over one case on the official `SAM2VideoPredictor`, as MedSAM's
authors run SAM 2 (and MedSAM2) on 3D images (the `propagate` protocol, samstudy.protocols.propagate).

Official: bowang-lab/MedSAM `exp_inference/infer_SAM2_3D_npz.py` (commit 87bc795), `infer_3d`, for each
object in label order:
- the frames are the object's slices z_min..z_max (the slices its ground truth spans: the stored 3D box's
  s0..s1), each grey slice made RGB and resized to S x S by PIL (`resize_grayscale_to_rgb_and_resize`:
  `Image.convert("RGB").resize((S, S))`, PIL's default bicubic), / 255, minus the ImageNet mean, over the
  std (lines 147-200); the same as `sam2/utils/misc.py` `_load_img_as_tensor` (lines 92-97) and
  `load_video_frames_from_jpg_images` (lines 253-277) give from JPEG files, without the JPEG round trip:
  samstudy feeds the arrays (`video_frames`) to the official `SAM2VideoPredictor.init_state` in place of
  its `load_video_frames`;
- `add_new_mask` on the prompt frame, `propagate_in_video` forward, `reset_state`, `add_new_mask` again,
  `propagate_in_video(reverse=True)` (the session's `add_mask`, `propagate`, `reset`).
The video predictor computes each frame's image features itself (`forward_image` of the frame: its own
resize, not the image predictor's, so not the embedding cache's); the session computes them once per slice
and case and hands them to each object's state (`cached_features`), the computation `_get_image_feature`
does on a miss. MedSAM's script runs under bf16 autocast on its GPU; samstudy does on a GPU, fp32 on a CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import numpy as np
import torch

from samstudy.families import SLICE, VOLUME
from samstudy.families.base import Predictor, VolumeSession

IMG_MEAN = (0.485, 0.456, 0.406)  # infer_SAM2_3D_npz.py; sam2/utils/misc.py load_video_frames defaults
IMG_STD = (0.229, 0.224, 0.225)


def video_frames(slices: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 slices (n, H, W) grey or (n, H, W, 3) RGB -> the video predictor's frames (n, 3, S, S) float32:
    PIL RGB + resize((S, S)) (bicubic), / 255, - mean, / std (computed in float64 as MedSAM's script does;
    the predictor casts each frame to float32)."""
    from PIL import Image

    out = np.zeros((len(slices), 3, image_size, image_size))
    for i, image in enumerate(slices):
        rgb = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB").resize((image_size, image_size))
        out[i] = np.array(rgb).transpose(2, 0, 1)
    frames = torch.from_numpy(out / 255.0)
    frames -= torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
    frames /= torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
    return frames.float()


def init_state(predictor, frames: torch.Tensor, hw: tuple[int, int]) -> dict:
    """The official `SAM2VideoPredictor.init_state`, with the frames given as arrays instead of read from a
    folder of JPEG files by `load_video_frames` (sam2_video_predictor.py line 51), and kept on the CPU
    (`offload_video_to_cpu`: each frame goes to the device when its features are computed)."""
    import sam2.sam2_video_predictor as video

    def frames_from_arrays(**kwargs):
        return frames, hw[0], hw[1]

    with mock.patch.object(video, "load_video_frames", frames_from_arrays):
        return predictor.init_state(video_path="<arrays>", offload_video_to_cpu=True)


def autocast(device: torch.device):
    """bf16 autocast on a GPU (as MedSAM's script runs), none on a CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class SAM2VolumeSession(VolumeSession):
    """One case on the official video predictor: every object's frames (its slice range) get a fresh
    inference state; each slice's image features are computed once per case and shared by the objects."""

    def __init__(self, video, image_size: int, slices: np.ndarray) -> None:
        self.video = video  # the official SAM2VideoPredictor (the family's model)
        self.image_size = image_size
        self.slices = slices
        self.hw = (int(slices.shape[1]), int(slices.shape[2]))
        self.device = next(video.parameters()).device
        self.features: dict[int, tuple[torch.Tensor, dict]] = {}  # slice -> (frame, forward_image output)
        self.position_encodings: list | None = None
        self.state: dict | None = None
        self.first = 0

    def frame_features(self, s: int, frame: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """_get_image_feature on a miss (sam2_video_predictor.py lines 710-717): forward_image of the frame."""
        if s not in self.features:
            image = frame.to(self.device).float().unsqueeze(0)
            with autocast(self.device):
                out = self.video.forward_image(image)
            # the position encodings depend on the feature sizes only: one copy shared by every frame
            self.position_encodings = self.position_encodings or out["vision_pos_enc"]
            out["vision_pos_enc"] = self.position_encodings
            self.features[s] = (image, out)
        return self.features[s]

    def track(self, first: int, last: int) -> None:
        frames = video_frames(self.slices[first : last + 1], self.image_size)
        with autocast(self.device):
            state = init_state(self.video, frames, self.hw)
            # every frame's features, computed once per case (what _get_image_feature would compute)
            state["cached_features"] = {k: self.frame_features(first + k, frames[k]) for k in range(len(frames))}
        self.state, self.first = state, first

    def add_mask(self, index: int, mask: np.ndarray) -> torch.Tensor:
        with autocast(self.device):
            _, _, logits = self.video.add_new_mask(self.state, frame_idx=index - self.first, obj_id=1, mask=mask)
        return logits[0, 0]

    def propagate(self, reverse: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        # The official generator runs to its end inside autocast and the frames are yielded after: a context
        # held open across `yield` would leak autocast into the caller's code between frames.
        with autocast(self.device):
            frames = [
                (self.first + k, logits[0, 0])
                for k, _, logits in self.video.propagate_in_video(self.state, reverse=reverse)
            ]
        yield from frames

    def reset(self) -> None:
        with autocast(self.device):
            self.video.reset_state(self.state)


class SAM2Predictor(Predictor):
    """SAM 2: the slice capability through the image-predictor wrappers (samstudy.families.sam2) and the
    volume capability through the official video predictor (one set of weights for both)."""

    capabilities = frozenset({SLICE, VOLUME})

    def volume_session(self, slices: np.ndarray) -> SAM2VolumeSession:
        """A session over one case's uint8 slices (n, H, W) on the video predictor."""
        return SAM2VolumeSession(self.sam.model, self.family.input_size, slices)
