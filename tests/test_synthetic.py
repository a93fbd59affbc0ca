import numpy as np
import SimpleITK as sitk

from samstudy import synthetic
from samstudy.io import sha256_file


def test_phantom_is_deterministic_and_has_the_promised_properties(tmp_path):
    settings = {"n_patients": 2, "scans_per_patient": 1, "shape": [32, 30, 8], "spacing": [1.2, 1.5, 3.0]}
    a = synthetic.write_dataset(tmp_path / "a", seed=3, settings=settings)
    b = synthetic.write_dataset(tmp_path / "b", seed=3, settings=settings)
    c = synthetic.write_dataset(tmp_path / "c", seed=4, settings=settings)
    files = sorted(p.relative_to(a) for p in a.rglob("*.nii.gz"))
    assert len(files) == 4
    assert all(sha256_file(a / f) == sha256_file(b / f) for f in files)
    assert any(sha256_file(a / f) != sha256_file(c / f) for f in files)
    img = sitk.ReadImage(str(a / "imagesTr" / "pat00_s0_0000.nii.gz"))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "labelsTr" / "pat00_s0.nii.gz")))
    assert img.GetSize() == (32, 30, 8)
    assert np.allclose(img.GetSpacing(), (1.2, 1.5, 3.0))
    assert not np.allclose(img.GetDirection(), np.eye(3).ravel())
    assert set(np.unique(lab)) == {0, 1, 2, 3}
    arr = sitk.GetArrayFromImage(img)
    assert arr.min() < -900 and 0 < np.median(arr[lab == 1]) < 120  # air and a soft-tissue liver in HU
