import numpy as np
import pytest
import torch

from samstudy.families import FAMILIES
from samstudy.preprocess import (
    clip_percentiles,
    clip_percentiles_fixed,
    from_slices,
    slice_axis,
    to_slices,
    window_ct,
    window_ct_fixed,
)
from samstudy.synthetic import direction_matrix


def test_ct_window_and_mr_percentiles_as_medsam_prepares_them():
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.int16)
    # pre_CT_MR.py: clip, min-max of the clipped volume, truncating cast (127.5 -> 127)
    assert window_ct(hu, 40, 400).tolist() == [0, 0, 127, 255, 255]
    assert window_ct_fixed(hu, 40, 400).tolist() == [0, 0, 128, 255, 255]  # the named option rounds
    # a volume that does not reach the window's top is stretched to 0..255 by the min-max
    assert window_ct(np.array([-200, 0, 40], dtype=np.int16), 40, 400).tolist() == [0, 204, 255]  # 160/200*255
    assert window_ct(np.full(4, 7.0), 40, 400).tolist() == [0, 0, 0, 0]  # constant: no division by zero
    mr = np.concatenate([np.zeros(10), np.linspace(1, 100, 1000)]).astype(np.float32)
    out = clip_percentiles(mr, 0.5, 99.5)
    assert out.dtype == np.uint8 and out.max() == 255 and np.all(out[:10] == 0)  # zero voxels stay 0
    low = np.percentile(mr[mr > 0], 0.5)
    assert np.all(out[10:][mr[10:] <= low] == 0) and np.all(out[10:][mr[10:] > low + 1] > 0)
    assert clip_percentiles_fixed(mr, 0.5, 99.5).max() == 255


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


@pytest.mark.parametrize("hw", [(37, 53), (53, 37), (64, 64), (31, 200), (173, 229)])
@pytest.mark.parametrize("name", ["litemedsam", "sam_vit_b", "medsam_vit_b"])
def test_model_frame_round_trip_on_odd_sizes(hw, name):
    family = FAMILIES[name]
    mask = np.zeros(hw, dtype=bool)
    mask[hw[0] // 4 : 3 * hw[0] // 4, hw[1] // 3 : 2 * hw[1] // 3] = True
    framed = family.mask_to_low_res(mask, 256)  # decoders output 256x256 logits whatever the input size
    logits = torch.from_numpy(framed * 8.0 - 4.0)[None, None].float()
    back = family.postprocess(logits, hw)[0].numpy() > family.threshold
    assert back.shape == hw
    assert (back == mask).mean() > 0.97
    x = family.image_to_input(np.full((2, *hw), 100, dtype=np.uint8))
    nh, nw = family.resized_shape(hw)
    assert x.shape == (2, 3, family.input_size, family.input_size) and x.dtype == torch.float32
    assert torch.all(x[:, :, nh:, :] == 0) and torch.all(x[:, :, :, nw:] == 0)  # padded bottom/right
    if name == "medsam_vit_b":
        assert (nh, nw) == (1024, 1024)  # MedSAM stretches the whole image: no padding


def test_rgb_slices_keep_their_colour_in_the_model_input():
    from samstudy.preprocess import image_2d

    rgb = np.zeros((1, 20, 30, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # a red image: grey would make the three channels equal
    from samstudy.families.sam import PIXEL_MEAN, PIXEL_STD

    sam = FAMILIES["sam_vit_b"]
    x = sam.image_to_input(rgb)
    nh, nw = sam.resized_shape((20, 30))
    std, mean = torch.tensor(PIXEL_STD), torch.tensor(PIXEL_MEAN)
    centre = x[0, :, nh // 2, nw // 2] * std + mean  # back to pixel values
    assert torch.allclose(centre, torch.tensor([200.0, 0.0, 0.0]), atol=1e-3)
    grey = sam.image_to_input(rgb[..., 0])[0, :, nh // 2, nw // 2] * std + mean
    assert torch.allclose(grey, torch.tensor([200.0, 200.0, 200.0]), atol=1e-3)  # grey: repeated
    assert np.array_equal(image_2d(rgb[0], "CT", {"level": 40, "width": 400}, [0.5, 99.5]), rgb[0])  # 8-bit: as is
    sixteen = np.linspace(0, 4000, 600).reshape(20, 30).astype(np.uint16)
    out = image_2d(sixteen, "other", {"level": 40, "width": 400}, [0.5, 99.5])
    assert out.dtype == np.uint8 and out.max() == 255  # above 255: min-max (pre_grey_rgb.py)
    small = np.arange(600).reshape(20, 30).astype(np.uint16) % 200  # 16-bit but within 0..255: kept
    assert np.array_equal(image_2d(small, "other", {"level": 40, "width": 400}, [0.5, 99.5]), small.astype(np.uint8))
