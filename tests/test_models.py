import pytest
import torch

from samstudy.models import CheckpointError, load_model, packaged_litemedsam_checkpoint


def test_litemedsam_real_weights_load_with_hash():
    model = load_model({"type": "litemedsam"})
    assert packaged_litemedsam_checkpoint().is_file()
    assert len(model.sha256) == 64
    assert not model.sam.training
    # eval() after loading: TinyViT's cached attention biases must be the loaded (non-zero) ones
    attn = next(m for m in model.sam.image_encoder.modules() if hasattr(m, "ab"))
    assert attn.ab.abs().sum() > 0
    assert model.embedding_size == 64 and model.low_res_size == 256


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model({"type": "litemedsam", "checkpoint": str(tmp_path / "nope.pth")})


def test_wrong_architecture_and_wrong_hash(tmp_path):
    # a LiteMedSAM file given as SAM ViT-B: a clear error naming the file and the type
    with pytest.raises(CheckpointError, match="does not fit model type 'sam_vit_b'"):
        load_model({"type": "sam_vit_b", "checkpoint": str(packaged_litemedsam_checkpoint())})
    with pytest.raises(CheckpointError, match="differs from the configured"):
        load_model({"type": "litemedsam", "sha256": "0" * 64})


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_model({"type": "litemedsam", "checkpoint": str(bad)})


def test_pickled_code_is_refused(tmp_path):
    # weights_only=True: a checkpoint carrying arbitrary objects is not unpickled
    evil = tmp_path / "evil.pth"
    torch.save({"model": object()}, evil)
    with pytest.raises(CheckpointError, match="could not be read"):
        load_model({"type": "litemedsam", "checkpoint": str(evil)})
