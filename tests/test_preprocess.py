import numpy as np
import pytest
import torch

from samstudy.models import LITEMEDSAM_INPUT, SAM_INPUT
from samstudy.preprocess import (
    clip_percentiles,
    from_slices,
    logits_to_native,
    mask_to_model,
    resized_shape,
    slice_axis,
    to_model_input,
    to_slices,
    window_ct,
)
from samstudy.synthetic import direction_matrix


def test_ct_window_and_mr_percentiles():
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.float32)
    assert window_ct(hu, 40, 400).tolist() == [0, 0, 128, 255, 255]
    mr = np.concatenate([np.zeros(10), np.linspace(1, 100, 1000)]).astype(np.float32)
    out = clip_percentiles(mr, 0.5, 99.5)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_slice_axis_follows_the_direction():
    assert slice_axis(direction_matrix(10.0), "axial") == 0  # array (z, y, x): z first
    # image axes permuted: image axis 0 points along physical z -> array axis 2
    permuted = (0, 0, 1, 0, 1, 0, 1, 0, 0)
    assert slice_axis(permuted, "axial") == 2
    assert slice_axis(permuted, "sagittal") == 0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_round_trip_exactly(axis):
    vol = np.random.default_rng(0).integers(0, 255, size=(5, 7, 9), dtype=np.uint8)
    assert np.array_equal(from_slices(to_slices(vol, axis), axis), vol)


@pytest.mark.parametrize("hw", [(37, 53), (53, 37), (64, 64), (31, 200)])
@pytest.mark.parametrize("spec", [LITEMEDSAM_INPUT, SAM_INPUT], ids=["litemedsam", "sam"])
def test_model_frame_round_trip_on_odd_sizes(hw, spec):
    mask = np.zeros(hw, dtype=bool)
    mask[hw[0] // 4 : 3 * hw[0] // 4, hw[1] // 3 : 2 * hw[1] // 3] = True
    framed = mask_to_model(mask, 256, spec)  # decoders output 256x256 logits whatever the input size
    logits = torch.from_numpy(framed * 2.0 - 1.0)[None, None].float()
    back = logits_to_native(logits, hw, spec)[0].numpy() > 0
    assert back.shape == hw
    assert (back == mask).mean() > 0.97
    x = to_model_input(np.full((2, *hw), 100, dtype=np.uint8), spec)
    nh, nw = resized_shape(*hw, spec.size)
    assert x.shape == (2, 3, spec.size, spec.size)
    assert torch.all(x[:, :, nh:, :] == 0) and torch.all(x[:, :, :, nw:] == 0)  # padded bottom/right


def test_rgb_slices_keep_their_colour_in_the_model_input():
    from samstudy.preprocess import image_2d

    rgb = np.zeros((1, 20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # a red image: grey would make the three channels equal
    x = to_model_input(rgb, SAM_INPUT)
    nh, nw = resized_shape(20, 30, SAM_INPUT.size)
    std, mean = torch.tensor(SAM_INPUT.pixel_std), torch.tensor(SAM_INPUT.pixel_mean)
    centre = x[0, :, nh // 2, nw // 2] * std + mean  # back to pixel values
    assert torch.allclose(centre, torch.tensor([200.0, 0.0, 0.0]), atol=1e-3)
    grey = to_model_input(rgb[..., 0], SAM_INPUT)[0, :, nh // 2, nw // 2] * std + mean
    assert torch.allclose(grey, torch.tensor([200.0, 200.0, 200.0]), atol=1e-3)  # grey: repeated
    assert np.array_equal(image_2d(rgb[0], "CT", {"level": 40, "width": 400}, [0.5, 99.5]), rgb[0])  # 8-bit: as is
    sixteen = np.linspace(0, 4000, 600).reshape(20, 30).astype(np.uint16)
    out = image_2d(sixteen, "other", {"level": 40, "width": 400}, [0.5, 99.5])
    assert out.dtype == np.uint8 and out.max() == 255  # other types get the modality's rule
