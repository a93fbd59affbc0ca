import json
import os
import re

import numpy as np

from samstudy.embed import CacheMiss, embed_dataset, load_case_embeddings, read_entry, select_slices


def _settings(**kw):
    return {"slices": "needed", "slice_margin": 0, "batch_size": 2, "device": "cpu", "precision": "fp32", **kw}


def test_select_slices():
    labels = np.zeros((6, 4, 4), dtype=np.uint8)
    labels[2, 1, 1] = 1
    assert select_slices(labels, "needed", 0).tolist() == [2]
    assert select_slices(labels, "needed", 1).tolist() == [1, 2, 3]
    assert select_slices(labels, "all", 0).tolist() == list(range(6))
    labels[4, 2, 2] = 1  # a label with a gap (slice 3): its whole slice range is needed (3D boxes span it)
    labels[0, 0, 0] = 2
    assert select_slices(labels, "needed", 0).tolist() == [0, 2, 3, 4]


def test_cache_hit_miss_corrupt_and_resume(study, tiny_model, caplog):
    cfg, layout = study
    model_cfg = {"type": "litemedsam"}
    first = embed_dataset(layout, "phantom", "m", model_cfg, _settings())
    cases = first["cases"]
    files = {c: e["file"] for c, e in cases.items()}
    mtimes = {c: os.path.getmtime(f) for c, f in files.items()}
    # same inputs: every case is a hit, nothing rewritten
    second = embed_dataset(layout, "phantom", "m", model_cfg, _settings())
    assert second["cases"] == cases
    assert all(os.path.getmtime(f) == mtimes[c] for c, f in files.items())
    # another model (weights hash) -> other keys
    other = embed_dataset(layout, "phantom", "m", {"type": "litemedsam", "tiny_seed": 1}, _settings())
    assert all(other["cases"][c]["key"] != cases[c]["key"] for c in cases)
    # a corrupted entry is detected and recomputed (not silently reused)
    victim = sorted(files)[0]
    with open(files[victim], "r+b") as fh:
        fh.truncate(100)
    try:
        read_entry(files[victim], cases[victim]["key"])
        raise AssertionError("corrupt entry was accepted")
    except CacheMiss:
        pass
    again = embed_dataset(layout, "phantom", "m", model_cfg, _settings())
    assert again["cases"][victim]["key"] == cases[victim]["key"]
    emb = load_case_embeddings(again["cases"][victim])
    assert len(emb) == len(cases[victim]["slices"]) and next(iter(emb.values())).shape == (256, 64, 64)
    # resume: a deleted entry (job killed before writing it) is the only one recomputed
    os.remove(files[victim])
    embed_dataset(layout, "phantom", "m", model_cfg, _settings())
    untouched = [c for c in files if c != victim]
    assert all(os.path.getmtime(files[c]) == mtimes[c] for c in untouched)


def test_content_and_window_change_are_misses(study, tiny_model):
    from samstudy.preprocess import preprocess_dataset

    cfg, layout = study
    before = embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, _settings())["cases"]
    ds = {**cfg["datasets"][0], "window": {"level": 100, "width": 800}}
    preprocess_dataset(layout, ds, cfg["preprocess"])
    after = embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, _settings())["cases"]
    assert all(after[c]["key"] != before[c]["key"] for c in before)


def test_signature_mismatch_is_a_miss(study, tiny_model, tmp_path):
    cfg, layout = study
    cases = embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, _settings())["cases"]
    entry = next(iter(cases.values()))
    with np.load(entry["file"]) as z:
        data = {k: z[k] for k in z.files}
    sig = json.loads(str(data["signature"]))
    sig["key"] = "0" * 64
    data["signature"] = json.dumps(sig)
    np.savez(open(entry["file"], "wb"), **data)
    try:
        read_entry(entry["file"], entry["key"])
        raise AssertionError("foreign entry was accepted")
    except CacheMiss as miss:
        assert "differs" in str(miss)


def test_cache_key_covers_the_family_transform_and_the_precision():
    """An entry made by another input transform (e.g. the torch-bilinear letterbox samstudy used before
    the official cv2 INTER_AREA one) or at another precision is never served."""
    from dataclasses import replace

    from samstudy.embed import CACHE_FORMAT, embedding_cache_key
    from samstudy.families import family_of
    from samstudy.families.litemedsam import LiteMedSAM
    from samstudy.models import LoadedModel

    class OldLetterbox(LiteMedSAM):  # same weights, another transform
        transform_id = "litemedsam/torch-bilinear-antialias/v0"

    slices = np.random.default_rng(0).integers(0, 255, (3, 20, 30), dtype=np.uint8)
    index = np.arange(3)
    model = LoadedModel("litemedsam", None, family_of("litemedsam"), None, "weights")
    key, signature = embedding_cache_key(model, slices, index, "fp32")
    assert signature["transform"] == "litemedsam/cv2-inter-area/minmax/pad/v1" and CACHE_FORMAT >= 2
    assert embedding_cache_key(replace(model, family=OldLetterbox()), slices, index, "fp32")[0] != key
    assert embedding_cache_key(model, slices, index, "bf16")[0] != key
    assert embedding_cache_key(model, slices, index, "fp32")[0] == key  # and stable


def test_embed_settings_training_cases_get_what_training_reads():
    from samstudy.config import embed_settings

    cfg = {"embed": {"slices": "all"}, "methods": {"zeroshot": {"adaptation": "none"}, "d": {"adaptation": "decoder"}}}
    assert embed_settings(cfg)["training_slices"] == "needed"
    cfg["methods"]["pf"] = {"adaptation": "promptfree"}  # trains on unlabelled slices too
    assert embed_settings(cfg)["training_slices"] == "all"
    cfg["embed"]["slices"] = "needed"
    assert embed_settings(cfg)["training_slices"] == "needed"


def test_all_slices_of_test_cases_labelled_slices_of_training_cases(study, tiny_model, caplog):
    """embed.slices: all embeds every slice of the test cases but only the labelled slices of the training
    and validation cases when no promptfree method needs the rest; the decoder's training samples (ids and
    embeddings) are exactly those of an index holding every slice."""
    from samstudy.io import write_json
    from samstudy.preprocess import load_preprocessed
    from samstudy.splits import cases_in, load_split
    from samstudy.train import collect_samples

    cfg, layout = study
    split = load_split(layout, "phantom")
    test = set(cases_in(split, "test"))
    full = embed_dataset(layout, "phantom", "m", {"type": "litemedsam"}, _settings(slices="all"))
    with caplog.at_level("INFO", logger="samstudy.embed"):
        lean = embed_dataset(
            layout, "phantom", "m", {"type": "litemedsam"}, _settings(slices="all", training_slices="needed")
        )
    shrunk = 0
    for case, entry in lean["cases"].items():
        labels = load_preprocessed(layout, "phantom", case)["labels"]
        want = range(len(labels)) if case in test else select_slices(labels, "needed", 0)
        assert entry["slices"] == list(want), case
        if case in test:
            assert entry["key"] == full["cases"][case]["key"]  # the same cache entry: a hit
        shrunk += len(full["cases"][case]["slices"]) - len(entry["slices"])
    assert test and shrunk > 0
    hits = re.findall(r"(\d+) cases, (\d+) cache hits, (\d+) slices \((\d+) of them computed\)", caplog.text)[-1]
    assert int(hits[1]) == len(test) and int(hits[3]) == sum(
        len(lean["cases"][c]["slices"]) for c in lean["cases"] if c not in test
    )
    for part in ("train", "val"):
        samples = []
        for index in (full, lean):
            write_json(layout.embed_index("m", "phantom"), index)
            samples.append(collect_samples(layout, ["phantom"], "m", part, 0))
        a, b = samples
        assert [s["id"] for s in a] == [s["id"] for s in b] and a
        assert all(np.array_equal(x["embedding"], y["embedding"]) for x, y in zip(a, b, strict=True))
