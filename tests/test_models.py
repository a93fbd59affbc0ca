import pytest
import torch

from samstudy.families import family_of
from samstudy.models import CheckpointError, load_model


def packaged_litemedsam_checkpoint():
    return family_of("litemedsam").packaged_checkpoint()


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


RANDOM_INIT_PROBE = """
import json, sys, torch
from samstudy.families import family_of
from samstudy.models import load_model, weights_sha256
from tests.conftest import tiny_sam

# conftest's tiny SAM, drawn from torch's random state as a family's build draws its weights
family_of("litemedsam").build = lambda: tiny_sam(int(torch.randint(0, 2**31 - 1, (1,))))
torch.manual_seed(int(sys.argv[2]))  # the caller's random state: no part of the weights, and left as it was
before = torch.get_rng_state()
model = load_model({"type": "litemedsam", "random_init": True, **json.loads(sys.argv[1])})
kept = bool(torch.equal(before, torch.get_rng_state()))
print(json.dumps({"sha256": model.sha256, "hash_of_weights": weights_sha256(model.sam) == model.sha256, "kept": kept}))
"""


def _random_init_in_a_fresh_interpreter(entry: dict, caller_seed: int) -> dict:
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    cmd = [sys.executable, "-c", RANDOM_INIT_PROBE, json.dumps(entry), str(caller_seed)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_random_init_weights_are_seeded_by_the_entry_and_keyed_by_their_hash():
    """Two interpreters build the same random weights from the same entry seed (whatever their own random
    state), another seed other weights; the model's hash (cache key, adapted checkpoints' base) is theirs."""
    first = _random_init_in_a_fresh_interpreter({"seed": 5}, caller_seed=1)
    second = _random_init_in_a_fresh_interpreter({"seed": 5}, caller_seed=2)
    other = _random_init_in_a_fresh_interpreter({"seed": 6}, caller_seed=1)
    default = _random_init_in_a_fresh_interpreter({}, caller_seed=1)
    assert first["sha256"] == second["sha256"] != other["sha256"]
    assert default["sha256"] == _random_init_in_a_fresh_interpreter({"seed": 0}, caller_seed=3)["sha256"]
    assert all(r["hash_of_weights"] and r["kept"] for r in (first, second, other, default))
    assert len(first["sha256"]) == 64 and first["sha256"] != "random-init"


def test_weights_sha256_hashes_the_tensors_bytes_without_copying_them():
    """The digest is that of every entry's name, dtype, shape and raw bytes (as a copy of them gave it)."""
    import hashlib

    from samstudy.models import weights_sha256
    from tests.conftest import tiny_sam

    module = tiny_sam(3)
    module.register_buffer("bf", torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t())  # bf16, not contiguous
    module.register_buffer("empty", torch.zeros(0))
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert weights_sha256(module) == digest.hexdigest()


REAL_BUILDERS_PROBE = """
import json, sys, torch
from samstudy.models import load_model, weights_sha256

torch.manual_seed(int(sys.argv[2]))  # the caller's random state: no part of the weights
out = {}
for model_type in ("sam_vit_b", "medsam_vit_b"):
    model = load_model({"type": model_type, "random_init": True, "seed": int(sys.argv[1])})
    out[model_type] = [model.sha256, weights_sha256(model.sam) == model.sha256]
print(json.dumps(out))
"""


def test_the_real_builders_draw_the_same_random_weights_from_the_same_seed_in_two_interpreters():
    """sam_vit_b and medsam_vit_b with random_init: the same entry seed gives the same weights (hash) in two
    fresh interpreters whatever their own random state; another seed other weights."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    def probe(seed: int, caller_seed: int) -> dict:
        cmd = [sys.executable, "-c", REAL_BUILDERS_PROBE, str(seed), str(caller_seed)]
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second, other = probe(5, 1), probe(5, 2), probe(6, 1)
    for model_type in ("sam_vit_b", "medsam_vit_b"):
        assert first[model_type][0] == second[model_type][0] != other[model_type][0], model_type
        assert all(r[model_type][1] for r in (first, second, other)), model_type
