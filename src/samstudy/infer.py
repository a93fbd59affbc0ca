"""Inference: a (zero-shot or adapted) SAM model under one prompt protocol, assembled into NIfTI volumes.

`infer_dataset` loops over a dataset's evaluation cases and hands each to its protocol's module
(samstudy.protocols: the registry says which module runs a kind, and which predictor capability it
needs); it names no protocol. The protocol returns the case's label slices (for `clicks` the volume
after every click too, written as `clicks/<case>/click_NN.nii.gz` for evaluate's Dice-vs-clicks table)
and, for the dynamic protocols, the prompts it used (`prompts/<case>.json` beside the predictions).

Each model family (samstudy.families) scales the prompts, puts the decoder's logits back into the native
slice and thresholds them as its official code does. The volume gets the original image's geometry (size,
spacing, origin, direction); `run.json` beside the predictions records how they were made (family,
transform, threshold, overlap rule or prompt-free classes).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from samstudy import adapt
from samstudy.cases import eval_cases, load_dataset_table, reference_geometry
from samstudy.embed import load_case_embeddings
from samstudy.io import atomic_path, read_json, write_json
from samstudy.models import LoadedModel, resolve_device
from samstudy.paths import Layout, run_name
from samstudy.preprocess import from_slices, load_preprocessed
from samstudy.prompts import load_prompts
from samstudy.protocols import PROMPT_FREE, protocol_for, protocol_info
from samstudy.protocols.base import CaseInputs

log = logging.getLogger(__name__)


def write_prediction(path: str, slices: np.ndarray, axis: int, reference) -> None:
    """Label slices back to the original grid, with the reference's geometry, as NIfTI. `reference`: the
    case's manifest row (exact; needed for 2D files, whose spacing comes from the config) or an image path.
    A 2D image (one slice) gets a 2D NIfTI in its own 2D geometry."""
    size, spacing, origin, direction = reference_geometry(reference)
    array = from_slices(slices, axis)
    img = sitk.GetImageFromArray(array[0] if len(size) == 2 else array)
    if img.GetSize() != size:
        raise RuntimeError(f"{path}: assembled size {img.GetSize()} differs from the image's size {size}")
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


def method_model_and_embeddings(
    layout: Layout, dataset: str, method: str, method_cfg: dict, model_cfg: dict, device: str
) -> tuple[LoadedModel, dict[str, dict]]:
    """The method's model (base + adapted checkpoint, `adapt.load_method_model`) and the embedding index of
    the dataset's evaluation cases: the base model's, or, for methods that adapt the encoder (LoRA,
    adapters, full), the adapted encoder's (written by `embed.embed_adapted`)."""
    adaptation = method_cfg["adaptation"]
    checkpoint = layout.checkpoint(method) if adaptation != "none" else None
    model = adapt.load_method_model(model_cfg, method_cfg, resolve_device(device), checkpoint)
    if adapt.adapts_encoder(adaptation):
        path = layout.adapted_embed_index(method, dataset)
        index = read_json(path)
        if index["model_sha256"] != model.weights_id:
            raise ValueError(f"{path}: embedded by other weights than {method}'s checkpoint; rerun embed_adapted")
        return model, index["cases"]
    return model, read_json(layout.embed_index(method_cfg["model"], dataset))["cases"]


def infer_dataset(
    layout: Layout,
    dataset: str,
    method: str,
    method_cfg: dict,
    model_cfg: dict,
    protocol: str,
    device: str = "auto",
    overlap: str = "official",
) -> list[str]:
    """Predict every evaluation case of a dataset with one method and protocol; returns written paths.

    A promptfree method runs protocol "none" (no prompts file is read); every other run reads its stored
    prompts, whose `kind` names the protocol that runs them (a derived protocol's prompts come from another
    run). A protocol the model's family cannot run (its capability) is refused before any case."""
    prompt_free = method_cfg["adaptation"] == adapt.PROMPTFREE
    if prompt_free and protocol != PROMPT_FREE:
        raise ValueError(f"method {method} is prompt-free: its protocol is '{PROMPT_FREE}', not '{protocol}'")
    model, index = method_model_and_embeddings(layout, dataset, method, method_cfg, model_cfg, device)
    table, _ = load_dataset_table(layout, dataset)
    rows = table.set_index("case_id")
    artifact = {} if prompt_free else load_prompts(layout, dataset, protocol)
    kind = artifact.get("kind", protocol)  # a derived protocol (prompts from another run) names its kind
    runner = protocol_for(kind)
    missing = protocol_info(kind).needs - model.predictor.capabilities
    if missing:
        raise ValueError(
            f"protocol {protocol} ({kind}) needs the {' and '.join(sorted(missing))} capability, which model family "
            f"{model.family.name} (model type {model.kind}) does not have"
        )
    prompts, settings = artifact.get("cases", {}), artifact.get("settings", {})
    run = run_name(method, protocol)
    run_info = runner.run_record(model, method, dataset, artifact, overlap)
    written = []
    for case in tqdm(eval_cases(layout, dataset), desc=f"infer {run}/{dataset}", unit="case"):
        pre = load_preprocessed(layout, dataset, case)
        inputs = CaseInputs(
            case,
            dataset,
            pre["slices"],
            pre["labels"],
            prompts[case] if artifact else [],  # prompt-free runs read no prompts
            settings,
            overlap,
            lambda case=case: load_case_embeddings(index[case]),
        )
        result = runner.run(model, inputs)
        out = layout.prediction(run, dataset, case)
        axis, reference = int(pre["axis"]), rows.loc[case]  # the manifest row: its geometry is the image's
        record = result.record
        if result.click_stack is not None:
            files = []
            for k, label_slices in enumerate(result.click_stack):  # the volume after every click, scored by evaluate
                files.append(layout.click_prediction(run, dataset, case, k))
                write_prediction(files[-1], label_slices, axis, reference)
            # relative to the run's predictions folder: the same record in a shard's folder and the gathered one
            stored = [str(Path(f).relative_to(layout.prediction_dir(run, dataset))) for f in files]
            record = {**(record or {}), "click_predictions": stored}
        if record is not None:  # the prompts the dynamic protocols actually used, beside the prediction
            write_json(layout.prompt_record(run, dataset, case), {"case": case, "protocol": protocol, **record})
        write_prediction(out, result.label_slices, axis, reference)
        written.append(out)
    record = {"run": run, "dataset": dataset, "protocol": protocol, **run_info, **model.family.describe()}
    write_json(layout.run_record(run, dataset), record)
    log.info("infer %s/%s: %d cases (%s)", run, dataset, len(written), record)
    return written
