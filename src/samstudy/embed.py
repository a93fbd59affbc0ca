"""Embed: run the SAM image encoder once per slice and cache the embeddings on disk.

Cache entries are content-addressed: the key covers the model weights hash, the model's input
transform and the bytes of the preprocessed slices (so every preprocessing parameter is covered through
the content). One file per case, fp16, written atomically, with its signature stored inside and checked
on every read: a mismatch or a corrupt file means recompute, never silent reuse. A killed job resumes:
finished cases are cache hits. `cache_dir` can be shared between studies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from samstudy.adapt import load_method_model
from samstudy.cases import eval_cases, load_dataset_table, select
from samstudy.io import atomic_path, write_json
from samstudy.models import LoadedModel, resolve_device
from samstudy.paths import Layout
from samstudy.preprocess import load_preprocessed
from samstudy.splits import cases_in, load_split

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when the file layout changes: old entries then miss


class CacheMiss(LookupError):
    """A cache entry is absent, corrupt, or was computed from other inputs."""


def select_slices(labels: np.ndarray, mode: str, margin: int) -> np.ndarray:
    """Slice indices to embed: all, or what prompts need: every slice from each label's first to its last
    slice (a 3D box spans gaps in a label), +/- margin."""
    n = labels.shape[0]
    if mode == "all":
        return np.arange(n)
    flat = labels.reshape(n, -1)
    keep = np.zeros(n, dtype=bool)
    values = np.flatnonzero(np.bincount(flat.ravel())) if flat.size else []  # label values present
    for value in (v for v in values if v != 0):
        present = np.flatnonzero((flat == value).any(axis=1))
        keep[max(0, present[0] - margin) : present[-1] + margin + 1] = True
    return np.flatnonzero(keep)


def slice_modes(layout: Layout, dataset: str, cases: list[str], settings: dict) -> dict[str, str]:
    """`select_slices`'s mode for each case: `settings["slices"]` for the test cases, and for the training
    and validation cases `settings["training_slices"]` (config.embed_settings; absent: the same as the
    test cases). The shard file a sharded job reads carries each case's test flag, so a new split reruns
    the job."""
    mode = settings["slices"]
    training = settings.get("training_slices", mode)
    if training == mode:
        return dict.fromkeys(cases, mode)
    test = set(cases_in(load_split(layout, dataset), "test"))
    return {case: mode if case in test else training for case in cases}


def embedding_cache_key(
    model: LoadedModel, slices: np.ndarray, index: np.ndarray, precision: str = "fp32"
) -> tuple[str, dict]:
    """The cache key of one case and the signature stored with it: weights, the family's input transform
    (an entry made by another transform can never be served), the encoder's precision and the content."""
    content = hashlib.sha256(np.ascontiguousarray(slices[index]).tobytes())
    content.update(np.asarray(index, dtype=np.int64).tobytes())
    content.update(str(slices.shape).encode())
    signature = {
        "format": CACHE_FORMAT,
        "model_type": model.kind,
        "model_sha256": model.weights_id,
        "transform": model.family.transform_id,
        "input_size": model.family.input_size,
        "precision": precision,
        "content_sha256": content.hexdigest(),
        "dtype": "float16",
    }
    key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()
    return key, signature


def read_entry(path: str | Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n, C, h, w) fp16 and their slice indices; CacheMiss if absent/corrupt/foreign."""
    path = Path(path)
    if not path.is_file():
        raise CacheMiss(f"{path}: not in the cache")
    try:
        with np.load(path) as z:
            signature = json.loads(str(z["signature"]))
            emb, index = z["embeddings"], z["slice_index"]
    except Exception as err:  # truncated zip, bad pickle, missing member: all mean "recompute"
        raise CacheMiss(f"{path}: unreadable cache entry ({type(err).__name__}: {err})") from err
    if signature.get("key") != key:
        raise CacheMiss(f"{path}: signature key {signature.get('key')} differs from {key}")
    if emb.shape[0] != index.shape[0] or not np.isfinite(emb).all():
        raise CacheMiss(f"{path}: inconsistent or non-finite embeddings")
    return emb, index


def write_entry(path: str | Path, key: str, signature: dict, emb: np.ndarray, index: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, embeddings=emb, slice_index=index, signature=json.dumps({**signature, "key": key}))


TRANSFORM_WORKERS = max(1, min(4, (os.cpu_count() or 1) - 1))  # threads running the family's input transform
TRANSFORM_AHEAD = 2  # batches transformed ahead of the encoder (bounds memory: a batch is <= 12 MB a slice)


def transformed_batches(model: LoadedModel, slices: np.ndarray, batch_size: int, pool: ThreadPoolExecutor):
    """The family's official input transform of each batch, computed in `pool` while the encoder works on
    the previous batches (MedSAM's scikit-image cubic resize costs ~1.3 s per slice on one core; OpenCV and
    scikit-image release the GIL, so threads run it in parallel)."""
    pending: deque = deque()
    predictor = model.predictor
    for start in range(0, len(slices), batch_size):
        pending.append(pool.submit(predictor.image_to_input, slices[start : start + batch_size]))
        if len(pending) > TRANSFORM_AHEAD:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


@torch.inference_mode()
def encode(model: LoadedModel, slices: np.ndarray, batch_size: int, precision: str) -> np.ndarray:
    """Run the image encoder (the model's predictor) over uint8 slices (n, H, W) or (n, H, W, 3); returns
    fp16 embeddings."""
    predictor = model.predictor
    device = predictor.device
    out = []
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    with ThreadPoolExecutor(TRANSFORM_WORKERS) as pool:
        for x in transformed_batches(model, slices, batch_size, pool):
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast:
                emb = predictor.encode(x)
            out.append(emb.float().half().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), dtype=np.float16)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def embed_cases(
    layout: Layout,
    dataset: str,
    cases: list[str],
    model: LoadedModel,
    settings: dict,
    desc: str,
    modes: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Embed the given cases of a dataset with a loaded model (cache hits are skipped, and logged);
    `modes`: each case's slice selection (default: `settings["slices"]` for all).

    Returns the index entries: case -> cache key, file, slices.
    """
    device = model.predictor.device
    precision = resolve_precision(settings["precision"], device)
    model.predictor.use_channels_last()
    index: dict[str, dict] = {}
    hits = computed = 0

    def prepare(case: str):
        pre = load_preprocessed(layout, dataset, case)
        mode = modes[case] if modes else settings["slices"]
        chosen = select_slices(pre["labels"], mode, settings["slice_margin"])
        key, signature = embedding_cache_key(model, pre["slices"], chosen, precision)
        return case, pre["slices"], chosen, key, signature

    # Overlap: the next case is read and hashed, and the previous one written, while this one encodes.
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        pending_write = None
        upcoming = reader.submit(prepare, cases[0]) if cases else None
        for i in tqdm(range(len(cases)), desc=desc, unit="case"):
            case, slices, chosen, key, signature = upcoming.result()
            upcoming = reader.submit(prepare, cases[i + 1]) if i + 1 < len(cases) else None
            path = layout.embedding_file(key)
            try:
                read_entry(path, key)
                hits += 1
            except CacheMiss as miss:
                if Path(path).exists():
                    log.warning("recomputing: %s", miss)
                emb = encode(model, slices[chosen], settings["batch_size"], precision)
                computed += len(chosen)
                if pending_write is not None:
                    pending_write.result()
                pending_write = writer.submit(write_entry, path, key, signature, emb, chosen)
            index[case] = {"key": key, "file": path, "slices": chosen.tolist()}
        if pending_write is not None:
            pending_write.result()
    log.info(
        "%s: %d cases, %d cache hits, %d slices (%d of them computed), device %s, %s",
        desc,
        len(cases),
        hits,
        sum(len(e["slices"]) for e in index.values()),
        computed,
        device,
        precision,
    )
    return index


def embed_dataset(
    layout: Layout,
    dataset: str,
    model_name: str,
    model_cfg: dict,
    settings: dict,
    random_init: bool = False,
    model: LoadedModel | None = None,
) -> dict:
    """Embed every case of a dataset (cache hits are skipped); write the dataset's embedding index.

    `model` may be given already loaded (benchmarks time the per-slice work without the one-off load).
    """
    model = model or load_method_model(model_cfg, None, resolve_device(settings["device"]), random_init=random_init)
    table, _ = load_dataset_table(layout, dataset)
    cases = select(layout, dataset, list(table["case_id"]))  # a sharded job: its shard's cases
    modes = slice_modes(layout, dataset, cases, settings)
    index = embed_cases(layout, dataset, cases, model, settings, f"embed {dataset} ({model_name})", modes)
    result = {"dataset": dataset, "model": model_name, "model_sha256": model.weights_id, "cases": index}
    write_json(layout.embed_index(model_name, dataset), result)
    return result


def embed_adapted(layout: Layout, dataset: str, method: str, method_cfg: dict, model_cfg: dict, settings: dict) -> dict:
    """Embed a dataset's evaluation cases with a method's adapted encoder (LoRA, adapters, full), into the
    same cache (keyed by the base and the adapted checkpoint's hashes); write the method's index."""
    device = resolve_device(settings["device"])
    model = load_method_model(model_cfg, method_cfg, device, layout.checkpoint(method))  # base + adapted checkpoint
    index = embed_cases(layout, dataset, eval_cases(layout, dataset), model, settings, f"embed {dataset} ({method})")
    result = {"dataset": dataset, "method": method, "model_sha256": model.weights_id, "cases": index}
    write_json(layout.adapted_embed_index(method, dataset), result)
    return result


def load_case_embeddings(entry: dict) -> dict[int, np.ndarray]:
    """slice index -> embedding (C, h, w) for one case of an embedding index (signature checked)."""
    emb, index = read_entry(entry["file"], entry["key"])
    return {int(i): emb[k] for k, i in enumerate(index)}
