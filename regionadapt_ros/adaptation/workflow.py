"""The adaptation workflow: base training, regional fine-tuning, evaluation against the base, bundles.

Every step checks its inputs before any training starts (datasets readable and large enough to split, base
bundle architecture equal to the networks'), and a region's bundle is written only if the fine-tuned model
beats the base model on the region's primary metric on that region's held-out test split (``force`` keeps it
anyway and records that in the manifest).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros import __version__
from regionadapt_ros.adaptation.drift import DriftTolerance, check_unlabelled_outputs, unlabelled_outputs
from regionadapt_ros.adaptation.evaluate import HIGHER_IS_BETTER, compare, evaluate
from regionadapt_ros.adaptation.train import Dist, TrainArrays, TrainConfig, Trainer, TrainResult
from regionadapt_ros.core import bundle as bundle_io
from regionadapt_ros.core.contracts import LABELS
from regionadapt_ros.core.errors import BundleError, DataError
from regionadapt_ros.models.export import export_onnx
from regionadapt_ros.models.registry import MODEL_NAMES, reference_architectures

_LOG = logging.getLogger("regionadapt_ros.adaptation")
SMALL_TEST_SPLIT = 30  # test samples below which finetune warns that its keep/refuse decision is a coin toss


# --------------------------------------------------------------------------------------------- data
def open_dataset(path: str | Path):
    from regionadapt_ros.adaptation.dataset import RegionDataset

    return RegionDataset.open(path)


def load_split(path: str | Path, split: str, region_id: int | None = None, limit: int | None = None) -> TrainArrays:
    """One split of a dataset directory in memory; ``region_id`` tags every sample (global model)."""
    ds = open_dataset(path)
    idx = np.asarray(ds.split(split))
    if limit is not None:
        idx = idx[:limit]
    if idx.size == 0:
        raise DataError(path, f"split {split!r} is empty: the dataset has too few samples to split")
    idx = np.sort(idx)
    arrays = TrainArrays(np.asarray(ds.images[idx]), np.asarray(ds.bev[idx]), np.asarray(ds.labels[idx], np.float32))
    if region_id is not None:
        arrays.region_ids = np.full(len(idx), region_id, np.int64)
    return arrays


def dataset_region(path: str | Path) -> str:
    return str(open_dataset(path).meta.get("region", Path(path).name))


# --------------------------------------------------------------------------------------------- bundles
def base_weights_of(bundle_dir: str | Path, trusted_keys: Sequence[str | Path] | None = None
                    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Full weights of a base bundle, checked against the networks' architecture (refused before training);
    with ``trusted_keys`` it must be signed by one of them."""
    try:
        loaded = bundle_io.read_bundle(bundle_dir, expected_architectures=reference_architectures(),
                                       trusted_keys=list(trusted_keys) if trusted_keys else None)
    except BundleError as exc:
        raise DataError(bundle_dir, f"base bundle refused: {exc}") from exc
    return {k: dict(v) for k, v in loaded.resolve().items()}, loaded.manifest


def read_serving_bundle(bundle_dir: str | Path, trusted_keys: Sequence[str | Path] | None = None
                        ) -> bundle_io.LoadedBundle:
    """A bundle as the offline commands (infer, evaluate, export) run it: checked against the networks'
    architecture, so that a bundle of another network, or one without a model, is a BundleError naming the
    tensor or the model (the vehicle's loader refuses both) rather than a failure inside PyTorch or ONNX Runtime."""
    return bundle_io.read_bundle(bundle_dir, expected_architectures=reference_architectures(),
                                 trusted_keys=list(trusted_keys) if trusted_keys else None)


def serving_weights_of(bundle_dir: str | Path, base: dict[str, dict[str, np.ndarray]] | None = None,
                       trusted_keys: Sequence[str | Path] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``read_serving_bundle``'s full weights for both models, resolved on ``base`` (a delta bundle)."""
    return {k: dict(v) for k, v in read_serving_bundle(bundle_dir, trusted_keys).resolve(base).items()}


def next_version(out_dir: Path) -> int:
    try:
        return int(bundle_io.read_manifest(out_dir)["bundle_version"]) + 1
    except (BundleError, KeyError, ValueError, FileNotFoundError):
        return 1


def write_model_bundle(out_dir: str | Path, region: str, result: TrainResult, base_hash: str | None,
                       metrics: dict[str, Any], rules: dict[str, Any] | None = None, with_onnx: bool = False,
                       override: dict[str, Any] | None = None, version: int | None = None,
                       base_id: str | None = None, sign_key: str | Path | None = None) -> Path:
    """Write ``result`` as a bundle (full for base training, a delta for head/adapter/LoRA), signed with the
    private key ``sign_key`` when given."""
    out = Path(out_dir)
    version = version or next_version(out)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_files = None
        if with_onnx:
            onnx_files = {m: export_onnx(m, Path(tmp) / f"{m}.onnx", result.weights[m]) for m in MODEL_NAMES}
        lora = {m: dict(result.lora) for m in MODEL_NAMES} if result.kind == "lora" and result.lora else None
        path = bundle_io.write_bundle(
            out, region, version, result.delta, result.kind, base_hash, reference_architectures(), metrics,
            rules=rules, onnx_files=onnx_files, lora=lora, override=override, base_id=base_id,
            created_by=f"regionadapt_ros {__version__}", overwrite=True,
        )
    if sign_key is not None:
        bundle_io.sign_bundle(path, sign_key)
    return path


# --------------------------------------------------------------------------------------------- steps
@dataclass
class FinetuneOutcome:
    region: str
    method: str
    comparison: dict[str, Any]
    base_metrics: dict[str, float]
    tuned_metrics: dict[str, float]
    bundle: Path | None
    kept: bool
    forced: bool
    history: list[dict[str, float]]
    delta_bytes: int = 0
    full_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["bundle"] = None if self.bundle is None else str(self.bundle)
        return d


def train_base(data_dirs: Sequence[str | Path], out_dir: str | Path, cfg: TrainConfig,
               dist: Dist | None = None, with_onnx: bool = True, limit: int | None = None,
               sign_key: str | Path | None = None) -> Path | None:
    """Train the base model on the mix of ``data_dirs`` and write the base bundle (rank 0 only)."""
    dist = dist or Dist()
    train = TrainArrays.concat([load_split(d, "train", limit=limit) for d in data_dirs])
    val = TrainArrays.concat([load_split(d, "val", limit=limit) for d in data_dirs])
    result = Trainer(cfg, None, dist).fit(train, val)
    if not dist.main:
        return None
    # Several datasets of one region (two drives) are one region's test set: keyed by region, one would hide the
    # others' results.
    by_region: dict[str, list] = {}
    for d in data_dirs:
        by_region.setdefault(dataset_region(d), []).append(load_split(d, "test"))
    per_region = {region: evaluate(result.weights, TrainArrays.concat(parts) if len(parts) > 1 else parts[0])
                  for region, parts in by_region.items()}
    sizes: dict[str, int] = {}
    for d in data_dirs:
        sizes[dataset_region(d)] = sizes.get(dataset_region(d), 0) + len(open_dataset(d).split("train"))
    metrics = {"kind": "base", "test": per_region, "history": result.history,
               "train_samples": len(train), "datasets": [str(d) for d in data_dirs],
               "home_region": max(sizes, key=sizes.get)}
    return write_model_bundle(out_dir, "base", result, None, metrics, with_onnx=with_onnx, sign_key=sign_key)


REHEARSAL_MIN = 256


def load_home_data(dirs: Sequence[str | Path]) -> dict[str, TrainArrays]:
    """The base's home data for the partial-label checks: {"train", "val", "test"} of ``dirs`` concatenated."""
    return {split: TrainArrays.concat([load_split(d, split) for d in dirs]) for split in ("train", "val", "test")}


def rehearsal(home: TrainArrays, limit: int) -> TrainArrays:
    """Up to ``limit`` home samples (evenly spread) with every label removed but the speed input: the base is
    their only teacher, so fine-tuning keeps the base's outputs on the base's home data too."""
    idx = np.linspace(0, len(home) - 1, num=min(len(home), max(1, limit))).round().astype(int)
    part = home.take(np.unique(idx))
    speed = part.labels[:, LABELS.index("speed")].copy()
    part.labels = np.full_like(part.labels, np.nan)
    part.labels[:, LABELS.index("speed")] = speed
    return part


def finetune(region: str, data_dir: str | Path, base_bundle: str | Path, out_dir: str | Path, cfg: TrainConfig,
             primary_metric: str, rules: dict[str, Any] | None = None, force: bool = False,
             dist: Dist | None = None, with_onnx: bool = False, trusted_keys: Sequence[str | Path] | None = None,
             sign_key: str | Path | None = None, home_data: Sequence[str | Path] = (),
             tolerance: DriftTolerance | None = None,
             extra_data: Sequence[str | Path] = ()) -> FinetuneOutcome | None:
    """Fine-tune the base on one region, compare on the region's test split, and write the bundle only if it
    beats the base on ``primary_metric`` and keeps the outputs the region's data does not label (adaptation/
    drift.py, on the region's test split and on ``home_data``'s), or with ``force``. With ``trusted_keys`` the
    base must be signed by one of them; with ``sign_key`` the written bundle is signed.

    When the region's data leaves outputs unlabelled, ``home_data`` (the base's home datasets) also joins
    training with its labels removed (``rehearsal``), so the distillation towards the base covers home scenes.
    ``extra_data``: more datasets of the region (on-policy states from closed-loop rollouts) whose train and val
    splits join the region's; the comparison stays on ``data_dir``'s test split.
    """
    dist = dist or Dist()
    tolerance = tolerance or DriftTolerance()
    base, base_manifest = base_weights_of(base_bundle, trusted_keys)  # refused before any training if it does not fit
    train, val = load_split(data_dir, "train"), load_split(data_dir, "val")
    if extra_data:
        train = TrainArrays.concat([train, *(load_split(d, "train") for d in extra_data)])
        val = TrainArrays.concat([val, *(load_split(d, "val") for d in extra_data)])
    test = load_split(data_dir, "test")
    if primary_metric not in HIGHER_IS_BETTER:
        raise DataError(data_dir, f"unknown primary metric {primary_metric!r}; one of {', '.join(HIGHER_IS_BETTER)}")
    unlabelled = unlabelled_outputs(train.labels)
    home = load_home_data(home_data) if unlabelled and home_data else None
    fit_train, fit_val = train, val
    if home is not None and cfg.distill:
        # as many home samples as region samples, and never fewer than REHEARSAL_MIN: a small region set must
        # not leave the base's home scenes with a handful of anchors
        fit_train = TrainArrays.concat([train, rehearsal(home["train"], max(len(train), REHEARSAL_MIN))])
        fit_val = TrainArrays.concat([val, rehearsal(home["val"], max(len(val), REHEARSAL_MIN // 4))])
    result = Trainer(cfg, base, dist).fit(fit_train, fit_val)
    if not dist.main:
        return None
    base_metrics = evaluate(base, test)
    tuned_metrics = evaluate(result.weights, test)
    comparison = compare(primary_metric, base_metrics, tuned_metrics)
    if len(test) < SMALL_TEST_SPLIT:
        # The decision is as good as the split it is made on: a handful of samples decides by chance.
        comparison["small_test_split"] = len(test)
        _LOG.warning("%s: the test split holds only %d sample(s); keeping or refusing the bundle rests on them "
                     "(%d or more make a comparison worth its name)", region, len(test), SMALL_TEST_SPLIT)
    if unlabelled:
        comparison["unlabelled_outputs"] = check_unlabelled_outputs(
            base, result.weights, test, unlabelled, home["test"] if home else None,
            home_reference(base_manifest), tolerance)
        comparison["unlabelled_outputs"]["home_data"] = [str(d) for d in home_data]
    refusals = comparison.get("unlabelled_outputs", {}).get("refusals", [])
    passes = comparison["beats_base"] and not refusals
    kept = passes or force
    bundle_path = None
    override = None
    if kept:
        if not passes:
            why = [] if comparison["beats_base"] else [
                f"{primary_metric} did not beat the base ({comparison['relative_improvement']:+.1%})"]
            override = {"forced": True, "reason": "kept with --force although " + "; ".join(why + refusals)}
        metrics = {"primary_metric": primary_metric, "comparison": comparison, "base": base_metrics,
                   "fine_tuned": tuned_metrics, "method": cfg.method, "history": result.history,
                   "test_samples": len(test), "train_samples": len(train),
                   "extra_datasets": [str(d) for d in extra_data]}
        bundle_path = write_model_bundle(out_dir, region, result, base_manifest["base_model"]["hash"], metrics,
                                         rules=rules, with_onnx=with_onnx, override=override,
                                         base_id=bundle_io.bundle_id(base_manifest), sign_key=sign_key)
    elif not comparison["beats_base"]:
        _LOG.warning("%s: fine-tuned model does not beat the base on %s (%s); no bundle written", region,
                     primary_metric, f"{comparison['relative_improvement']:+.1%}")
    else:
        _LOG.warning("%s: the outputs the data does not label drifted from the base; no bundle written: %s",
                     region, "; ".join(refusals))
    delta_bytes = sum(a.nbytes for m in result.delta.values() for a in m.values())
    full_bytes = sum(a.nbytes for m in result.weights.values() for a in m.values())
    return FinetuneOutcome(region, cfg.method, comparison, base_metrics, tuned_metrics, bundle_path, kept,
                           override is not None, result.history, delta_bytes, full_bytes)


def home_region(manifest: dict[str, Any]) -> str | None:
    """The base bundle's home region: ``metrics.home_region`` (written by ``train_base``), else, for bases
    written before it was recorded, the region whose name ends the first training dataset's directory name."""
    m = manifest.get("metrics") or {}
    if isinstance(m.get("home_region"), str):
        return m["home_region"]
    datasets, tested = m.get("datasets") or [], m.get("test") or {}
    if datasets and isinstance(datasets[0], str) and isinstance(tested, dict):
        first = Path(datasets[0]).name
        for region in sorted(tested, key=len, reverse=True):
            if first == region or first.endswith(f"_{region}"):
                return region
    return None


def home_reference(manifest: dict[str, Any]) -> dict[str, float]:
    """The base's test metrics on its home region as its bundle recorded them (empty when unknown)."""
    region = home_region(manifest)
    tested = (manifest.get("metrics") or {}).get("test") or {}
    values = tested.get(region) if region else None
    if not isinstance(values, dict):
        return {}
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def write_json(path: str | Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


HOME_SAMPLES = 400  # synthetic home samples generated for the partial-label checks when none are at hand


def resolve_home_data(base_manifest: dict[str, Any], given: Sequence[str | Path], cache_root: Path,
                      ) -> tuple[list[Path], str]:
    """The base's home datasets for a partial-label fine-tune, and where they came from: ``given``
    (``--home-data``); else the base's own training datasets of its home region when they are on disk; else, for
    a base whose home is a synthetic region, ``HOME_SAMPLES`` samples of it generated once into ``cache_root``;
    else none (the outputs the region's data does not label are then checked on the region's data only)."""
    if given:
        return [Path(d) for d in given], "--home-data"
    region = home_region(base_manifest)
    recorded = [Path(d) for d in (base_manifest.get("metrics") or {}).get("datasets") or [] if isinstance(d, str)]
    on_disk = []
    for d in recorded:
        try:
            if dataset_region(d) == region:
                on_disk.append(d)
        except DataError:
            continue
    if on_disk:
        return on_disk, "the base bundle's training data"
    from regionadapt_ros.adaptation.regions import REGIONS

    if region not in REGIONS:
        return [], "none: the base's home data is not here (pass --home-data)"
    from regionadapt_ros.adaptation.dataset import build_region_dataset
    from regionadapt_ros.adaptation.synthetic import GENERATOR_VERSION

    path = cache_root / f"{region}-n{HOME_SAMPLES}-g{GENERATOR_VERSION}"
    try:
        open_dataset(path)
    except DataError:
        _LOG.info("generating %d synthetic samples of %s, the base's home region, for the partial-label checks",
                  HOME_SAMPLES, region)
        build_region_dataset(region, HOME_SAMPLES, 4242, path, workers=2, progress=False)
    return [path], f"{HOME_SAMPLES} synthetic samples of {region}, the base's home region (cached in {path})"
