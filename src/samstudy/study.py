"""The study table: which runs a validated config makes, which dataset each run is scored on, nnU-Net's
datasets, ids and variants, and the slice of the config each rule depends on (its `params:`).

Computed once from the validated config (`Study(cfg)`), torch-free: the Snakefile's rules read it
(workflow/rules/common.smk keeps only the Snakemake glue) and tests/test_study.py checks it. A rule's
params are the dicts returned here, passed through `config.as_param`: Snakemake reruns a job when its
params' JSON changes, so each holds exactly what the job depends on and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from samstudy import config as samstudy_config
from samstudy import readers
from samstudy.config import ConfigError
from samstudy.families import MODEL_TYPES, family_info, types_with
from samstudy.paths import (
    NNUNET_PROMPT_PROTOCOL,
    Layout,
    nnunet_variant_run_name,
    run_name,
    shard_names,
)
from samstudy.protocols import PROMPT_FREE as NO_PROMPTS  # "none": the protocol and source of prompt-free runs
from samstudy.protocols import family_runs_protocol, protocol_info

log = logging.getLogger(__name__)

PROMPT_FREE = "promptfree"  # the adaptation of prompt-free methods (one run each, protocol "none")
TRAIN_TEST = "train_test"  # the dataset role adaptation training and nnU-Net train on
FAMILY_KEYS = frozenset(k for t in MODEL_TYPES for k in family_info(t).model_keys)  # model keys of some families


@dataclass(frozen=True)
class Run:
    """One evaluated run: a method under a protocol (`<method>.<protocol>`), a prompt-free method
    (`<method>.none`) or an nnU-Net configuration (`nnunet_<configuration>`, `nnunet_prompted_<...>`).
    `prompted` means "prompts from the ground truth"; `prompt_source` is ground_truth, run:<name> or none."""

    method: str
    model: str
    adaptation: str
    protocol: str
    prompted: bool
    prompt_source: str

    def info(self) -> dict[str, Any]:
        """The run's record as evaluate and the metrics table carry it (the evaluate rule's `run_info`)."""
        return asdict(self)


@dataclass(frozen=True)
class NnunetVariant:
    """One way the study trains nnU-Net: plain, or prompted (each label's box as extra input channels: the
    oracle counterpart of box-prompted SAM; its own nnU-Net dataset, stamps, logs and runs)."""

    prompted: bool

    @property
    def rule(self) -> str:
        """The prefix of its rule names (nnunet_export, nnunet_prompted_export, ...)."""
        return "nnunet_prompted" if self.prompted else "nnunet"

    @property
    def tag(self) -> str:
        """What its log and benchmark names add after the dataset ("" or ".prompted")."""
        return ".prompted" if self.prompted else ""

    def run_name(self, configuration: str) -> str:
        """The run of one of its configurations (nnunet_2d, nnunet_prompted_2d)."""
        return nnunet_variant_run_name(configuration, self.prompted)


NNUNET_PLAIN = NnunetVariant(prompted=False)
NNUNET_PROMPTED = NnunetVariant(prompted=True)
NNUNET_VARIANTS = (NNUNET_PLAIN, NNUNET_PROMPTED)  # every variant has its rules; a study runs those it enables


def runs_protocol(cfg: dict[str, Any], method: str, protocol: str) -> bool:
    """Whether a prompt-based method runs a protocol (a ground-truth one or a derived one, by its kind):
    its family has the capability the protocol needs (`propagate` needs SAM 2's video memory, the volume
    capability, so only SAM 2 methods run it; every other protocol runs with every method)."""
    kind = cfg["prompts"]["derived"].get(protocol, {}).get("kind", protocol)
    return family_runs_protocol(cfg["models"][cfg["methods"][method]["model"]]["type"], kind)


class Study:
    """The study table of one validated config (samstudy.config.validate)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.seed: int = cfg["seed"]
        self.layout = Layout(cfg["results_dir"], cfg["cache_dir"])
        self.datasets: dict[str, dict[str, Any]] = {d["name"]: d for d in cfg["datasets"]}
        self.train_datasets: list[str] = [d for d, ds in self.datasets.items() if ds["role"] == TRAIN_TEST]
        check_runs(cfg)
        check_training_data(cfg)
        nn = cfg["nnunet"]
        self.nnunet_datasets: list[str] = self.train_datasets if nn["enabled"] else []
        self.nnunet_configurations: list[str] = nn["configurations"]
        self.nnunet_folds: list[int] = nn["folds"]
        self.nnunet_best: bool = bool(self.nnunet_datasets) and nn["select_best"]
        # the variants this study trains: plain, and prompted with nnunet.prompted (none without datasets)
        variants = (NNUNET_PLAIN, NNUNET_PROMPTED) if nn["prompted"] else (NNUNET_PLAIN,)
        self.nnunet_variants: tuple[NnunetVariant, ...] = variants if self.nnunet_datasets else ()
        # what nnU-Net training and prediction depend on (not the lists of configurations and folds)
        self.nnunet_training = {k: nn[k] for k in ("schedule", "quick", "device", "select_best")}
        self.nnunet_prediction = {k: nn[k] for k in ("schedule", "device")}
        self.protocols: list[str] = cfg["prompts"]["protocols"]
        self.derived: dict[str, dict[str, Any]] = cfg["prompts"]["derived"]
        self.shards: int = cfg["execution"]["shards"]
        self.shard_names: list[str] = shard_names(self.shards)
        # the embed stage's settings: embed.slices for the test cases, what training reads for the others
        self.embed = samstudy_config.embed_settings(cfg)
        self.runs: dict[str, Run] = self._runs()
        # (run, dataset) pairs that are evaluated; those of the `clicks` protocol are also scored after
        # every click (Dice vs clicks)
        self.eval_parts: list[tuple[str, str]] = [
            (r, d) for r in self.runs for d in self.datasets if self.evaluated(r, d)
        ]
        self.click_parts: list[tuple[str, str]] = [
            (r, d) for r, d in self.eval_parts if protocol_info(self.kind_of(self.runs[r].protocol)).per_step
        ]

    # The runs and where they are scored.

    def kind_of(self, protocol: str) -> str:
        """The protocol kind a run's protocol runs as: a derived protocol's `kind`, else the protocol itself."""
        return self.derived.get(protocol, {}).get("kind", protocol)

    def _runs(self) -> dict[str, Run]:
        # Prompt-based methods x protocols (prompts from the ground truth: the oracle arms), methods x
        # derived protocols (prompts from another run's predictions: automatic), prompt-free methods, then
        # nnU-Net configurations (+ best), then prompted nnU-Net configurations.
        cfg = self.cfg
        runs: dict[str, Run] = {}
        for method, spec in cfg["methods"].items():
            base = {"method": method, "model": spec["model"], "adaptation": spec["adaptation"]}
            if spec["adaptation"] == PROMPT_FREE:
                runs[run_name(method, NO_PROMPTS)] = Run(
                    **base, protocol=NO_PROMPTS, prompted=False, prompt_source=NO_PROMPTS
                )
                continue
            for protocol in self.protocols:
                if runs_protocol(cfg, method, protocol):  # propagate: SAM 2 methods only
                    runs[run_name(method, protocol)] = Run(
                        **base, protocol=protocol, prompted=True, prompt_source="ground_truth"
                    )
            for protocol, derived in self.derived.items():
                if runs_protocol(cfg, method, protocol):
                    runs[run_name(method, protocol)] = Run(
                        **base, protocol=protocol, prompted=False, prompt_source=f"run:{derived['from']}"
                    )
        if self.nnunet_datasets:
            for configuration in self.nnunet_configurations + (["best"] if self.nnunet_best else []):
                name = NNUNET_PLAIN.run_name(configuration)
                runs[name] = Run(name, "nnunet", "supervised", NO_PROMPTS, False, NO_PROMPTS)
        if NNUNET_PROMPTED in self.nnunet_variants:
            for configuration in self.nnunet_configurations:
                name = NNUNET_PROMPTED.run_name(configuration)
                runs[name] = Run(name, "nnunet", "supervised", NNUNET_PROMPT_PROTOCOL, True, "ground_truth")
        return runs

    def run_info(self, run: str) -> dict[str, Any]:
        """One run's record (evaluate's `run_info`)."""
        return self.runs[run].info()

    def nnunet_configs(self, dataset: str) -> list[str]:
        """The nnU-Net configurations trained on a dataset: nnU-Net plans no 3D configuration for 2D images,
        so on a 2D dataset only its 2d one."""
        if readers.is_2d(self.datasets[dataset]):
            return [c for c in self.nnunet_configurations if c == "2d"]
        return self.nnunet_configurations

    def nnunet_runs(self, dataset: str) -> list[str]:
        """The nnU-Net runs made on a dataset (plain configurations, best, prompted configurations)."""
        if dataset not in self.nnunet_datasets:
            return []
        configs = self.nnunet_configs(dataset)
        best = ["best"] if self.nnunet_best and configs else []
        prompted = [NNUNET_PROMPTED.run_name(c) for c in configs] if NNUNET_PROMPTED in self.nnunet_variants else []
        return [NNUNET_PLAIN.run_name(c) for c in configs + best] + prompted

    def evaluated(self, run: str, dataset: str) -> bool:
        """Whether a run is made and scored on a dataset: nnU-Net only where it was trained (configurations
        it can plan); prompt-free methods on the datasets they were trained on (their classes); derived
        prompts where their source run is evaluated; every other run everywhere."""
        info = self.runs[run]
        if info.model == "nnunet":
            return run in self.nnunet_runs(dataset)
        if info.adaptation == PROMPT_FREE:
            return dataset in self.train_datasets
        if info.protocol in self.derived:  # no source run: nowhere
            source = self.derived[info.protocol]["from"]
            return source in self.runs and self.evaluated(source, dataset)
        return True

    def adapts_encoder(self, method: str) -> bool:
        """LoRA, adapters and full fine-tuning change the encoder: they run it on the preprocessed slices
        and do not use the base model's cached embeddings."""
        return self.cfg["methods"][method]["adaptation"] in samstudy_config.ENCODER_ADAPTATIONS

    def model_of(self, method: str) -> str:
        """The name of a method's base model (its entry under `models`)."""
        return self.cfg["methods"][method]["model"]

    def nnunet_dataset_id(self, dataset: str, variant: NnunetVariant = NNUNET_PLAIN) -> int:
        """nnU-Net's dataset id: dataset_id_start + the dataset's position; the prompted variant's is the
        plain one + 100 (nnU-Net ids have three digits: - 100 above 899)."""
        plain = self.cfg["nnunet"]["dataset_id_start"] + list(self.datasets).index(dataset)
        if not variant.prompted:
            return plain
        return plain + 100 if plain + 100 <= 999 else plain - 100

    # Paths the rules list (targets and inputs that need no checkpoint).

    def gathered(self) -> list[str]:
        """The shards' per-case artifacts gathered at their documented places for every dataset (the
        embedding index of each base model, the prompts of each protocol), beside predictions and metrics."""
        layout = self.layout
        prompt_based = [(self.runs[r], d) for r, d in self.eval_parts if self.runs[r].model != "nnunet"]
        indexes = {
            layout.embed_index(self.model_of(r.method), d) for r, d in prompt_based if not self.adapts_encoder(r.method)
        }
        prompts = {layout.prompts(d, r.protocol) for r, d in prompt_based if r.protocol != NO_PROMPTS}
        return sorted(indexes | prompts)

    def train_inputs(self, method: str) -> dict[str, list[str]]:
        """What adaptation training reads: the training datasets' slices and splits (and embeddings, unless
        the method runs the encoder itself)."""
        layout = self.layout
        inputs = {
            "preprocessed": [layout.preprocessed_dir(d) for d in self.train_datasets],
            "splits": [layout.dataset_splits(d) for d in self.train_datasets],
        }
        if not self.adapts_encoder(method):
            inputs["embeddings"] = [layout.embed_index(self.model_of(method), d) for d in self.train_datasets]
        return inputs

    def infer_inputs(self, method: str, dataset: str, protocol: str, shard: str) -> dict[str, str]:
        """One shard's inference inputs: its prompts, the method's checkpoint, its embeddings (the shard's
        cases file is the rule's separate input: it needs the `shard` checkpoint)."""
        spec = self.cfg["methods"][method]
        layout = self.layout.for_shard(shard)
        inputs = {}
        if spec["adaptation"] != PROMPT_FREE:
            inputs["prompts"] = layout.prompts(dataset, protocol)
        if spec["adaptation"] != "none":
            inputs["checkpoint"] = self.layout.checkpoint(method)
        if self.adapts_encoder(method):
            inputs["embeddings"] = layout.adapted_embed_index(method, dataset)
        else:
            inputs["embeddings"] = layout.embed_index(spec["model"], dataset)
        return inputs

    def nnunet_trained(
        self, dataset: str, configurations: list[str], variant: NnunetVariant = NNUNET_PLAIN
    ) -> list[str]:
        """The train stamps of some configurations of a dataset, every fold."""
        return [
            self.layout.nnunet_train_done(dataset, c, f, variant.prompted)
            for c in configurations
            for f in self.nnunet_folds
        ]

    def nnunet_train_inputs(self, dataset: str, configuration: str, variant: NnunetVariant) -> list[str]:
        """What one nnU-Net training waits for: its plan, and for 3d_cascade_fullres the 3d_lowres
        cross-validation (its training cases' first-stage segmentations)."""
        inputs = [self.layout.nnunet_plan_done(dataset, variant.prompted)]
        if configuration == "3d_cascade_fullres":
            inputs += self.nnunet_trained(dataset, ["3d_lowres"], variant)
        return inputs

    def nnunet_stamps(self) -> list[str]:
        """Every nnU-Net training stamp of the study (the report's provenance), variant by variant."""
        return [
            stamp
            for d in self.nnunet_datasets
            for variant in self.nnunet_variants
            for stamp in self.nnunet_trained(d, self.nnunet_configs(d), variant)
        ]

    def nnunet_best_stamps(self) -> list[str]:
        """nnU-Net's model choice of every dataset that has one (select_best)."""
        best = NNUNET_PLAIN.run_name("best")
        return [self.layout.nnunet_best_done(d) for d in self.nnunet_datasets if best in self.nnunet_runs(d)]

    # Each rule's params: the slice of the config its job depends on.

    def ingest_params(self, dataset: str, files: Any) -> dict[str, Any]:
        """ingest: the dataset entry; the seed for the synthetic phantom only (generated from it); `files`:
        the raw files' listing (sizes and times), so a file replaced by an older one reruns too."""
        ds = self.datasets[dataset]
        return {"dataset": ds, "seed": self.seed if ds["format"] == "synthetic" else None, "files": files}

    def datasets_params(self) -> dict[str, Any]:
        """manifest and splits: the datasets they merge."""
        return {"datasets": list(self.datasets)}

    def split_params(self, dataset: str) -> dict[str, Any]:
        """split: the dataset's role, the seed and the splits section."""
        return {"role": self.datasets[dataset]["role"], "seed": self.seed, "splits": self.cfg["splits"]}

    def preprocess_params(self, dataset: str) -> dict[str, Any]:
        """preprocess: CT datasets use the window, the others the percentiles: each reruns only on its own."""
        ds = self.datasets[dataset]
        unused = "mr_percentiles" if ds["modality"] == "CT" else "ct_window"
        return {
            "dataset": {k: ds.get(k) for k in ("name", "modality", "window")},
            "preprocess": {k: v for k, v in self.cfg["preprocess"].items() if k != unused},
        }

    def shards_params(self) -> dict[str, Any]:
        """shard and the gather rules: the number of shards."""
        return {"shards": self.shards}

    def embed_params(self, model: str) -> dict[str, Any]:
        """embed: the model entry and the embed settings."""
        return {"model": self.cfg["models"][model], "embed": self.embed}

    def embed_adapted_params(self, method: str) -> dict[str, Any]:
        """embed_adapted: the method, its base model and the embed section."""
        return {
            "method": self.cfg["methods"][method],
            "model": self.cfg["models"][self.model_of(method)],
            "embed": self.cfg["embed"],
        }

    def prompt_settings(self, protocol: str) -> dict[str, Any]:
        """The prompts section as a protocol uses it: only its own settings, so changing the jitter does
        not redo tight boxes."""
        return {k: self.cfg["prompts"][k] for k in ["components", *protocol_info(protocol).settings]}

    def prompts_params(self, protocol: str) -> dict[str, Any]:
        """prompts (from the ground truth): the protocol's settings and the seed."""
        return {"prompts": self.prompt_settings(protocol), "seed": self.seed}

    def derived_prompts_params(self, protocol: str) -> dict[str, Any]:
        """derived_prompts: the derived protocol's entry, its kind's settings and the seed."""
        derived = self.derived[protocol]
        return {"derived": derived, "prompts": self.prompt_settings(derived["kind"]), "seed": self.seed}

    def train_params(self, method: str) -> dict[str, Any]:
        """train: the method, its base model, the training datasets, the train section and the seed."""
        return {
            "method": self.cfg["methods"][method],
            "model": self.cfg["models"][self.model_of(method)],
            "datasets": self.train_datasets,
            "train": self.cfg["train"],
            "seed": self.seed,
        }

    def infer_params(self, method: str) -> dict[str, Any]:
        """infer: the method, its base model, the device, the infer section (prompt-free methods take an
        argmax over classes: the overlap rule does not apply)."""
        spec = self.cfg["methods"][method]
        return {
            "method": spec,
            "model": self.cfg["models"][spec["model"]],
            "device": self.cfg["embed"]["device"],
            **({} if spec["adaptation"] == PROMPT_FREE else {"infer": self.cfg["infer"]}),
        }

    def nnunet_params(self, step: str, variant: NnunetVariant, dataset: str) -> dict[str, Any]:
        """nnU-Net export, plan, train, predict of a variant: its dataset id (and `prompted`) and what the
        step depends on (the prompted export: the training boxes' jitter and seed)."""
        params: dict[str, Any] = {"dataset_id": self.nnunet_dataset_id(dataset, variant)}
        if variant.prompted:
            params["prompted"] = True
        nn = self.cfg["nnunet"]
        if step == "export":
            if variant.prompted:
                params.update(jitter_px=self.cfg["train"]["jitter_px"], seed=self.seed)
        elif step == "plan":
            params.update(configurations=nn["configurations"], schedule=nn["schedule"])
        elif step == "train":
            params.update(nnunet=self.nnunet_training, seed=self.seed)
        elif step == "predict":
            params.update(nnunet=self.nnunet_prediction, folds=self.nnunet_folds)
        else:
            raise ValueError(f"nnU-Net step '{step}': one of export, plan, train, predict")
        return params

    def nnunet_select_params(self, dataset: str) -> dict[str, Any]:
        """nnunet_select: the configurations trained on the dataset and the folds."""
        return {
            "dataset_id": self.nnunet_dataset_id(dataset),
            "configurations": self.nnunet_configs(dataset),
            "folds": self.nnunet_folds,
        }

    def nnunet_predict_best_params(self, dataset: str) -> dict[str, Any]:
        """nnunet_predict_best: as a plain prediction."""
        return self.nnunet_params("predict", NNUNET_PLAIN, dataset)

    def evaluate_params(self, run: str) -> dict[str, Any]:
        """evaluate and evaluate_clicks: the run's record and the evaluate section."""
        return {"run_info": self.run_info(run), "evaluate": self.cfg["evaluate"]}

    def summarize_params(self) -> dict[str, Any]:
        """summarize: the evaluated (run, dataset) pairs, those scored per click, the seed (bootstrap)."""
        return {"parts": self.eval_parts, "click_parts": self.click_parts, "seed": self.seed}

    def report_params(self, nnunet_stamps: list[str]) -> dict[str, Any]:
        """report: the whole validated config and the nnU-Net stamps it cites."""
        return {"config": self.cfg, "nnunet_stamps": nnunet_stamps}


# Config errors the study table can see: refused before any job runs.


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """A config validated as the workflow validates it before any job: the schema and the config layer's
    checks (`config.validate`), then the study table's (`check_runs`, `check_training_data`)."""
    cfg = samstudy_config.validate(config)
    check_runs(cfg)
    check_training_data(cfg)
    return cfg


def load(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it as the workflow does (`validate`)."""
    return validate(samstudy_config.read_yaml(path))


def check_runs(cfg: dict[str, Any]) -> dict[str, Any]:
    """What the study runs can run: each model family runs its methods' adaptations and model keys and has
    its weights (`check_families`), derived prompts come from automatic runs (`check_prompt_sources`), and
    every protocol the config lists is run by some method (`check_protocols`). Returns `cfg`."""
    check_families(cfg)
    check_prompt_sources(cfg)
    check_protocols(cfg)
    return cfg


def check_protocols(cfg: dict[str, Any]) -> None:
    """A protocol (ground-truth or derived) that no prompt-based method of the study can run, because no
    method's family has the capability it needs (`propagate`: SAM 2's video memory), is refused with the
    model types that run it; where some methods run it, the others are simply not its runs."""
    prompt_based = [m for m, spec in cfg["methods"].items() if spec["adaptation"] != PROMPT_FREE]
    if not prompt_based:
        return  # no prompt-based method: no protocol has runs (nnU-Net or prompt-free studies)
    listed = [*cfg["prompts"]["protocols"], *cfg["prompts"]["derived"]]
    for protocol in listed:
        if any(runs_protocol(cfg, m, protocol) for m in prompt_based):
            continue
        kind = cfg["prompts"]["derived"].get(protocol, {}).get("kind", protocol)
        able = [t for t in MODEL_TYPES if family_runs_protocol(t, kind)]
        models = ", ".join(sorted({cfg["models"][cfg["methods"][m]["model"]]["type"] for m in prompt_based}))
        raise ConfigError(
            f"prompts: protocol '{protocol}'{f' (kind {kind})' if kind != protocol else ''} is run by no method "
            f"of this study: its methods' model types ({models}) cannot run it; model types that can: "
            f"{', '.join(able)}. Add a method with one of them, or remove the protocol"
        )


def check_families(cfg: dict[str, Any]) -> dict[str, Any]:
    """What each model's family runs (samstudy.families): a model key its family does not read, or an
    adaptation it does not run, is refused with the reason. Returns `cfg`."""
    for name, model in cfg["models"].items():
        if family_info(model["type"]).needs_checkpoint and not model["checkpoint"] and not model.get("random_init"):
            raise ConfigError(f"models.{name}: type {model['type']} needs a 'checkpoint' path (or random_init: true)")
        # keys only some families read (image_size: SAM 2's input size)
        for key in sorted(set(model) & FAMILY_KEYS):
            if key not in family_info(model["type"]).model_keys:
                types = types_with(key)
                labels = " / ".join(dict.fromkeys(family_info(t).label for t in types))
                raise ConfigError(f"models.{name}: {key} applies to the {labels} types only ({', '.join(types)})")
    for name, method in cfg["methods"].items():
        info = family_info(cfg["models"][method["model"]]["type"])
        if not info.runs(method["adaptation"]):
            raise ConfigError(
                f"methods.{name}: adaptation '{method['adaptation']}' is not built for {info.label} models (they "
                f"run {', '.join(info.adaptations)}): {info.refused}"
            )
    return cfg


def check_prompt_sources(cfg: dict[str, Any]) -> None:
    """Derived (automatic) protocols take their prompts from an automatic run (nnU-Net, prompt-free SAM);
    automatic arms need every slice embedded. A source this study does not make (nnU-Net disabled, or
    another configuration) adds no run, with a warning (a config merged over the default study removes
    the default's `auto_box` with `prompts: {derived: {auto_box: null}}`)."""
    derived = cfg["prompts"]["derived"]
    properties = samstudy_config.schema()["properties"]
    ground_truth = properties["prompts"]["properties"]["protocols"]["items"]["enum"]
    nn = cfg["nnunet"]
    promptfree = [m for m, spec in cfg["methods"].items() if spec["adaptation"] == PROMPT_FREE]
    # Only automatic runs may be sources: boxes from a ground-truth-prompted run's masks would carry the
    # ground truth into an arm filed as automatic.
    configurations = properties["nnunet"]["properties"]["configurations"]["items"]["enum"]
    nnunet = NNUNET_PLAIN.run_name
    made = {run_name(m, NO_PROMPTS) for m in promptfree}
    possible = made | {nnunet(c) for c in [*configurations, "best"]}
    if nn["enabled"]:
        made |= {nnunet(c) for c in nn["configurations"] + (["best"] if nn["select_best"] else [])}
    active = []
    for name, spec in derived.items():
        if name in ground_truth or name == "none":
            raise ConfigError(f"prompts.derived.{name}: the name is taken by a ground-truth protocol; choose another")
        if spec["from"] not in possible:
            raise ConfigError(
                f"prompts.derived.{name}.from: '{spec['from']}' is not an automatic run (prompts from a "
                f"ground-truth-prompted run would leak the ground truth); automatic runs: {sorted(possible)}"
            )
        if spec["from"] in made:
            active.append(name)
        else:
            log.warning("prompts.derived.%s: this study makes no run %s: it adds no run", name, spec["from"])
    if (active or promptfree) and cfg["embed"]["slices"] != "all":
        what = f"prompts.derived {active}" if active else f"methods {promptfree} (promptfree)"
        raise ConfigError(
            f"{what}: automatic arms need every slice embedded (embed.slices: all): selecting slices by the "
            "ground truth would tell them where the structures are"
        )


def check_training_data(cfg: dict[str, Any]) -> None:
    """A method that trains (any adaptation but `none`) needs a dataset with role train_test: without one
    its train job would fail, after the whole embedding stage. The error names the methods and the
    datasets that could train them."""
    could_train = [ds["name"] for ds in cfg["datasets"] if ds["role"] == TRAIN_TEST]
    trained = {m: spec["adaptation"] for m, spec in cfg["methods"].items() if spec["adaptation"] != "none"}
    if trained and not could_train:
        methods = ", ".join(f"{m} (adaptation {a})" for m, a in trained.items())
        roles = ", ".join(f"{ds['name']}: {ds['role']}" for ds in cfg["datasets"])
        raise ConfigError(
            f"methods {methods}: training needs a dataset with role train_test, and none of this study's "
            f"datasets has it ({roles}): no dataset could train them. Give a dataset `role: train_test`, "
            "or remove these methods (a `null` entry removes one: `methods: {name: null}`, config/README.md)"
        )


def check_checkpoints(cfg: dict[str, Any]) -> None:
    """The checkpoint file of every model a method uses exists (a model with random_init needs none).
    Without this a missing file would pass a dry run and fail only in its embed job."""
    for name, model in cfg["models"].items():
        users = [m for m, spec in cfg["methods"].items() if spec["model"] == name]
        if not users or model.get("random_init") or not model.get("checkpoint"):
            continue
        path = Path(model["checkpoint"]).expanduser()
        if not path.is_file():
            what = "is a folder, not a checkpoint file" if path.exists() else "does not exist"
            raise ConfigError(f"models.{name}.checkpoint: {path} {what} (the model of methods {', '.join(users)})")
