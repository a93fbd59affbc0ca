"""The `propagate` protocol: SAM 2 prompts one slice per object and its memory propagates the mask through
the volume, as MedSAM's authors evaluate SAM 2 (and MedSAM2) on 3D images.

Official: bowang-lab/MedSAM `exp_inference/infer_SAM2_3D_npz.py` (commit 87bc795), `infer_3d`, for each
object in label order:
- the frames are the object's slices z_min..z_max (the slices its ground truth spans: the stored 3D box's
  s0..s1), each grey slice made RGB and resized to S x S by PIL (`resize_grayscale_to_rgb_and_resize`:
  `Image.convert("RGB").resize((S, S))`, PIL's default bicubic), / 255, minus the ImageNet mean, over the
  std (lines 147-200); the same as `sam2/utils/misc.py` `_load_img_as_tensor` (lines 92-97) and
  `load_video_frames_from_jpg_images` (lines 253-277) give from JPEG files, without the JPEG round trip:
  samstudy feeds the arrays (`video_frames`) to the official `SAM2VideoPredictor.init_state` in place of
  its `load_video_frames`;
- the prompt slice is the slab's middle, z_min + int(n / 2); its mask comes from the image predictor with
  the 3D box's xy box (`SAM2ImagePredictor.predict(box, multimask_output=False)`: samstudy's 2D path with
  the cached embedding, held equal to it in tests/test_sam2.py);
- `add_new_mask` on that frame, `propagate_in_video` forward, `reset_state`, `add_new_mask` again,
  `propagate_in_video(reverse=True)`; every frame's mask (logits > 0) is written with the object's label
  (`segs_3D[...] = idx`): both directions write the prompt slice, and a later object overwrites an
  earlier one; no postprocessing.
The video predictor computes each frame's image features itself (`forward_image` of the frame: its own
resize, not the image predictor's, so not the embedding cache's); samstudy computes them once per slice
and case and hands them to each object's state (`cached_features`), the computation `_get_image_feature`
does on a miss. MedSAM's script runs under bf16 autocast on its GPU; samstudy does on a GPU, fp32 on a CPU.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from unittest import mock

import numpy as np
import torch

from samstudy.models import LoadedModel

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


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_propagate(
    model: LoadedModel,
    embeddings: dict[int, np.ndarray],
    prompts: list[dict],
    slices: np.ndarray,
    case: str,
) -> tuple[dict[int, list[tuple[int, torch.Tensor]]], list[dict]]:
    """Every object's 3D box (`box3d` prompts): its middle slice predicted from the box's xy extent by the
    2D path (cached embedding), that mask propagated forward and backward through the box's slices by the
    official video predictor. Returns per slice the (label, logits at native size) to assemble in object
    order (a later object overwrites), and per object the prompt slice, its box and the frames predicted."""
    from samstudy.infer import _embedding, decode_prompts  # infer dispatches here: imported when it runs

    predictor = model.sam.model
    size = model.family.input_size
    hw = (int(slices.shape[1]), int(slices.shape[2]))
    device = next(predictor.parameters()).device
    features: dict[int, tuple[torch.Tensor, dict]] = {}  # slice -> (frame, forward_image output), per case
    position_encodings: list | None = None
    predictions: dict[int, list[tuple[int, torch.Tensor]]] = defaultdict(list)
    records = []

    def frame_features(s: int, frame: torch.Tensor) -> tuple[torch.Tensor, dict]:
        # _get_image_feature on a miss (sam2_video_predictor.py lines 710-717): forward_image of the frame.
        nonlocal position_encodings
        if s not in features:
            image = frame.to(device).float().unsqueeze(0)
            with _autocast(device):
                out = predictor.forward_image(image)
            # the position encodings depend on the feature sizes only: one copy shared by every frame
            position_encodings = position_encodings or out["vision_pos_enc"]
            out["vision_pos_enc"] = position_encodings
            features[s] = (image, out)
        return features[s]

    for prompt in prompts:
        x0, y0, s0, x1, y1, s1 = (int(v) for v in prompt["box3d"])
        n = s1 - s0 + 1
        middle = s0 + int(n / 2)  # z_mid = int(img.shape[0] / 2); z_mid_orig = z_mid + z_min
        box = [x0, y0, x1, y1]  # box[[0, 1, 3, 4]]
        scores = decode_prompts(model, _embedding(embeddings, middle, case), [{"box": box}], hw)[0]
        mask = (scores > model.family.threshold).numpy()
        frames = video_frames(slices[s0 : s1 + 1], size)
        with _autocast(device):
            state = init_state(predictor, frames, hw)
            # every frame's features, computed once per case (what _get_image_feature would compute)
            state["cached_features"] = {k: frame_features(s0 + k, frames[k]) for k in range(n)}
            written: dict[str, list[int]] = {}
            for direction, reverse in (("forward", False), ("reverse", True)):
                _, _, first = predictor.add_new_mask(state, frame_idx=middle - s0, obj_id=1, mask=mask)
                if not reverse:  # segs_3D[z_mid_orig, masks[0] > 0] = idx
                    predictions[middle].append((prompt["label"], first[0, 0].float().cpu()))
                frames_done = []
                for k, _, logits in predictor.propagate_in_video(state, reverse=reverse):
                    predictions[s0 + k].append((prompt["label"], logits[0, 0].float().cpu()))
                    frames_done.append(s0 + k)
                written[direction] = frames_done
                predictor.reset_state(state)
        records.append(
            {
                **prompt,
                "prompt_slice": middle,
                "prompt_box": box,
                "prompt_voxels": int(mask.sum()),
                "slices": written,
            }
        )
    return dict(predictions), records
