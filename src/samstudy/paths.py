"""The one path layout of a study. The Snakefile and the library both build paths here.

Every method takes wildcard values; passing the literal strings "{dataset}", "{method}", ... gives the
Snakemake pattern, passing real names gives the file. Nothing else in the project joins result paths.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

# Runs evaluated by the study: a prompt-based method with a protocol is named "<method>.<protocol>",
# nnU-Net runs are named "nnunet_<configuration>" (they take no prompts).
RUN_SEPARATOR = "."


def run_name(method: str, protocol: str | None) -> str:
    """The name of one evaluated run: the folder under predictions/ and the metrics 'run' column."""
    return method if protocol is None else f"{method}{RUN_SEPARATOR}{protocol}"


def nnunet_run_name(configuration: str) -> str:
    """The run name of an nnU-Net configuration (nnU-Net takes no prompts)."""
    return run_name(f"nnunet_{configuration}", None)


def nnunet_prompted_run_name(configuration: str) -> str:
    """The run name of a prompted nnU-Net configuration (each label's box as extra input channels: the
    oracle counterpart of box-prompted SAM)."""
    return run_name(f"nnunet_prompted_{configuration}", None)


def nnunet_variant_run_name(configuration: str, prompted: bool) -> str:
    """The run name of a configuration of the plain or the prompted nnU-Net."""
    return nnunet_prompted_run_name(configuration) if prompted else nnunet_run_name(configuration)


# The prompts the prompted nnU-Net's test cases get as box channels: the very boxes box-prompted SAM gets.
NNUNET_PROMPT_PROTOCOL = "box"


def _nnunet_stamp(dataset: str, prompted: bool, *parts: str) -> str:
    # the prompted nnU-Net's stamps: its own nnU-Net dataset, named <dataset>.prompted.*
    return ".".join([dataset, *(["prompted"] if prompted else []), *parts, "json"])


def shard_name(index: int, count: int) -> str:
    """The name of one shard of a dataset's cases: "<index>of<count>" (0-based index)."""
    return f"{index}of{count}"


def shard_names(count: int) -> list[str]:
    return [shard_name(k, count) for k in range(count)]


def parse_shard(name: str) -> tuple[int, int]:
    index, _, count = name.partition("of")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"shard {name!r}: expected <index>of<count> with 0 <= index < count, e.g. 0of4")
    return int(index), int(count)


def shard_of(case: str, count: int) -> int:
    """The shard a case belongs to among `count`: a hash of its id alone, so adding or removing a case
    never moves another one, and the same case lands in the same shard in every study."""
    return int(hashlib.sha256(case.encode()).hexdigest()[:12], 16) % count


@dataclass(frozen=True)
class Layout:
    results_dir: str
    cache_dir: str = ".cache/samstudy"
    # A sharded job's layout ("<index>of<count>", see `shard_name`): its per-case artifacts (embedding
    # index, prompts, predictions, metrics) go under results/shards/<shard>/ with the same tree as the
    # whole study's, and it handles only the cases of its shard (`select`). Gather jobs merge the shards
    # into the unsharded paths.
    shard: str | None = None

    def _r(self, *parts: str) -> str:
        return str(Path(self.results_dir, *parts))

    def _s(self, *parts: str) -> str:
        """A per-case artifact: under shards/<shard>/ in a sharded job's layout."""
        return self._r(*parts) if self.shard is None else self._r("shards", self.shard, *parts)

    def for_shard(self, shard: str | None) -> Layout:
        """The layout of one shard of this study (None: the whole study's)."""
        return replace(self, shard=shard)

    def shard_cases(self, dataset: str, view: str = "slices") -> str:
        """The cases of one dataset in this layout's shard with a fingerprint of each (written by the
        `shard` checkpoint; the sharded jobs' input, so a shard reruns only when its own cases change).
        view "slices": fingerprints of the preprocessed slices and of the manifest rows (the SAM stages);
        "rows": of the manifest rows only (content hashes of the raw files: nnU-Net and evaluation, which
        read the raw data, so a new CT window does not rerun them)."""
        if self.shard is None:
            raise ValueError("shard_cases: a shard's layout is needed (Layout.for_shard)")
        return self._s("cases", f"{dataset}.json" if view == "slices" else f"{dataset}.{view}.json")

    def in_shard(self, case: str) -> bool:
        if self.shard is None:
            return True
        index, count = parse_shard(self.shard)
        return shard_of(case, count) == index

    def select(self, cases: list[str]) -> list[str]:
        """The cases (in their order) this layout's job handles: all, or those of its shard."""
        return [c for c in cases if self.in_shard(c)]

    # paths stored in results (manifest, ingest info): relative to results_dir when inside it
    def stored(self, path: str | Path) -> str:
        """How a path is written into a result file: relative to results_dir when it lies inside (a results
        folder moved or pulled elsewhere still finds its files), else absolute."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(Path(self.results_dir).resolve()))
        except ValueError:
            return str(path)

    def resolve(self, stored: str | Path) -> str:
        """The absolute path of a stored one (see `stored`)."""
        return str(Path(self.results_dir).resolve() / stored)

    # ingest
    def raw_dir(self, dataset: str) -> str:
        """Where a synthetic dataset is written (a standard nnU-Net v2 raw layout)."""
        return self._r("raw", dataset)

    def ingest_table(self, dataset: str) -> str:
        return self._r("ingest", f"{dataset}.parquet")

    def ingest_rejected(self, dataset: str) -> str:
        return self._r("ingest", f"{dataset}.rejected.parquet")

    def ingest_info(self, dataset: str) -> str:
        return self._r("ingest", f"{dataset}.json")

    def manifest(self) -> str:
        return self._r("manifest.parquet")

    def rejected(self) -> str:
        return self._r("rejected.parquet")

    def dataset_splits(self, dataset: str) -> str:
        return self._r("splits", f"{dataset}.json")

    def nnunet_splits(self, dataset: str) -> str:
        """The same split in nnU-Net's splits_final.json form."""
        return self._r("splits", dataset, "splits_final.json")

    def splits(self) -> str:
        return self._r("splits.json")

    # preprocess / embed / prompts
    def preprocessed_dir(self, dataset: str) -> str:
        return self._r("preprocessed", dataset)

    def preprocessed_case(self, dataset: str, case: str) -> str:
        return self._r("preprocessed", dataset, f"{case}.npz")

    def embed_index(self, model: str, dataset: str) -> str:
        return self._s("embeddings", model, f"{dataset}.json")

    def adapted_embed_index(self, method: str, dataset: str) -> str:
        """Embedding index of a dataset's evaluation cases under a method's adapted encoder (LoRA, ...)."""
        return self._s("embeddings", "adapted", method, f"{dataset}.json")

    def embedding_file(self, key: str) -> str:
        return str(Path(self.cache_dir, "embeddings", key[:2], f"{key}.npz"))

    def prompts(self, dataset: str, protocol: str) -> str:
        return self._s("prompts", dataset, f"{protocol}.json")

    # adaptation
    def model_dir(self, method: str) -> str:
        return self._r("models", method)

    def checkpoint(self, method: str) -> str:
        return self._r("models", method, "checkpoint.pt")

    def curves(self, method: str) -> str:
        return self._r("models", method, "curves.csv")

    # predictions
    def prediction_dir(self, run: str, dataset: str) -> str:
        return self._s("predictions", run, dataset)

    def prediction_not_planned(self, run: str, dataset: str) -> str:
        """Marker in an nnU-Net run's prediction folder: nnU-Net did not plan this configuration."""
        return self._s("predictions", run, dataset, "not_planned.json")

    def prediction(self, run: str, dataset: str, case: str) -> str:
        return self._s("predictions", run, dataset, f"{case}.nii.gz")

    def run_record(self, run: str, dataset: str) -> str:
        """How a SAM-family run's predictions were made (family, transform, threshold, overlap rule)."""
        return self._s("predictions", run, dataset, "run.json")

    def prompt_record(self, run: str, dataset: str, case: str) -> str:
        """The prompts a dynamic protocol (clicks, box3d) actually used on one case, written by infer."""
        return self._s("predictions", run, dataset, "prompts", f"{case}.json")

    def click_prediction(self, run: str, dataset: str, case: str, clicks: int) -> str:
        """The `clicks` protocol's volume after `clicks` correction clicks (0 = the starting prompt)."""
        return self._s("predictions", run, dataset, "clicks", case, f"click_{clicks:02d}.nii.gz")

    # nnU-Net
    def nnunet_root(self) -> str:
        return self._r("nnunet")

    # nnU-Net (prompted=True: the prompted nnU-Net, its own nnU-Net dataset with the label boxes as channels)
    def nnunet_export_done(self, dataset: str, prompted: bool = False) -> str:
        return self._r("nnunet", "stamps", _nnunet_stamp(dataset, prompted, "exported"))

    def nnunet_plan_done(self, dataset: str, prompted: bool = False) -> str:
        return self._r("nnunet", "stamps", _nnunet_stamp(dataset, prompted, "planned"))

    def nnunet_train_done(self, dataset: str, configuration: str, fold: int | str, prompted: bool = False) -> str:
        return self._r("nnunet", "stamps", _nnunet_stamp(dataset, prompted, configuration, f"fold{fold}", "trained"))

    def nnunet_best_done(self, dataset: str) -> str:
        """nnU-Net's own best-configuration selection (find_best_configuration) for one dataset."""
        return self._r("nnunet", "stamps", f"{dataset}.best.json")

    # evaluate / report
    def run_metrics(self, run: str, dataset: str) -> str:
        return self._s("metrics", run, f"{dataset}.parquet")

    def run_click_metrics(self, run: str, dataset: str) -> str:
        """Metrics after every click of a `clicks` run (long format, a `clicks` column)."""
        return self._s("metrics", run, f"{dataset}.clicks.parquet")

    def click_metrics(self) -> str:
        """Every `clicks` run's metrics after every click: the Dice-vs-clicks table."""
        return self._r("dice_vs_clicks.parquet")

    def metrics(self) -> str:
        return self._r("metrics.parquet")

    def summary(self) -> str:
        return self._r("summary.json")

    def paired_tests(self) -> str:
        """Within each comparison (automatic, oracle), each run against the comparison's baseline: paired
        tests on per-case Dice."""
        return self._r("paired_tests.parquet")

    def dice_plot(self) -> str:
        """Mean Dice per run and label as CSV (a DVC plot)."""
        return self._r("plots", "dice_per_run.csv")

    def clicks_plot(self) -> str:
        """Mean Dice per clicks run, dataset and click count as CSV (a DVC plot)."""
        return self._r("plots", "dice_vs_clicks.csv")

    def report(self) -> str:
        return self._r("report", "index.html")

    def log(self, name: str) -> str:
        return self._r("logs", f"{name}.log")

    def benchmark_dir(self) -> str:
        """Snakemake's benchmark: files (one TSV per job)."""
        return self._r("benchmarks")

    def benchmark(self, name: str) -> str:
        return str(Path(self.benchmark_dir(), f"{name}.tsv"))
