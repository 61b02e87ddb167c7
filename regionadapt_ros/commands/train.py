"""``regionadapt train-base | finetune | evaluate | export | train-all``: the adaptation tooling."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regionadapt_ros.commands.argtypes import number, plot_path, seed_arg

METHODS = ("full", "head", "adapter", "lora")
PRIMARY_METRICS = ("tl_macro_f1", "lane_offset_mae", "heading_mae", "obstacle_distance_mae", "steering_mae",
                   "accel_mae")


def _add_train_options(p: argparse.ArgumentParser, epochs: int, lr: float) -> None:
    p.add_argument("--epochs", type=number(int, 1), default=epochs)
    p.add_argument("--batch-size", type=number(int, 1), default=64)
    p.add_argument("--lr", type=number(float, 0.0, inclusive=False), default=lr)
    p.add_argument("--weight-decay", type=number(float, 0.0), default=1e-4)
    p.add_argument("--patience", type=number(int, 0), default=4, help="early stopping: epochs without val improvement")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--no-progress", action="store_true")


def _config(args: argparse.Namespace, method: str):
    from regionadapt_ros.adaptation.train import TrainConfig

    return TrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, patience=args.patience, augment=not args.no_augment,
                       seed=args.seed, progress=not args.no_progress,
                       lora_rank=getattr(args, "lora_rank", 8), lora_alpha=getattr(args, "lora_alpha", 16.0))


def _add_key_options(p: argparse.ArgumentParser, verify: bool = True, sign: bool = False) -> None:
    if verify:
        p.add_argument("--key", action="append", default=[], type=Path, metavar="PUB",
                       help="trusted public key PEM (repeatable): every bundle read must be signed by one of them")
    if sign:
        p.add_argument("--sign-key", type=Path, metavar="PRIV",
                       help="sign every bundle written with this ed25519 private key (PKCS#8 PEM)")


def _check_keys(args: argparse.Namespace) -> None:
    """Read the key files before any work: a typo must not surface after an hour of training."""
    from regionadapt_ros.core import signing

    if getattr(args, "key", None):
        signing.load_trusted_keys(args.key)
    if getattr(args, "sign_key", None) is not None:
        signing.load_private_key(args.sign_key)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-base", help="train the base model on a mix of datasets → base bundle")
    p.add_argument("data", nargs="+", help="dataset directories (regionadapt data generate/import)")
    p.add_argument("--out", required=True, help="bundle directory to write (e.g. bundles/base)")
    p.add_argument("--no-onnx", action="store_true", help="do not include ONNX exports in the bundle")
    _add_key_options(p, verify=False, sign=True)
    _add_train_options(p, epochs=10, lr=2e-3)
    p.set_defaults(func=_train_base)

    p = sub.add_parser("finetune", help="fine-tune the base on one region; bundle only if it beats the base")
    p.add_argument("data", help="the region's dataset directory")
    p.add_argument("--region", help="region id (default: from the dataset)")
    p.add_argument("--base", required=True, help="base bundle directory")
    p.add_argument("--out", required=True, help="bundle directory to write (e.g. bundles/highway)")
    p.add_argument("--method", choices=METHODS, default="lora")
    p.add_argument("--primary-metric", choices=PRIMARY_METRICS,
                   help="the metric the bundle must beat the base on (default: the region's declared one for the "
                        "synthetic regions, else inferred from the labels the data has)")
    p.add_argument("--home-data", action="append", default=[], metavar="DIR",
                   help="the base's home dataset (repeatable): when the region's data leaves outputs unlabelled, "
                        "fine-tuning keeps the base's outputs on it and the gate checks them there (default: the "
                        "base's own training data if present, else generated for a synthetic home region)")
    p.add_argument("--drift-tolerance", type=float, default=0.5, metavar="F",
                   help="unlabelled outputs may move from the base's by at most F x the base's home error "
                        "(default 0.5)")
    # the adapted layers are at most 128 wide: a larger rank adds nothing, and a typo must not ask for terabytes
    p.add_argument("--lora-rank", type=number(int, 1, 256), default=8)
    p.add_argument("--lora-alpha", type=number(float, 0.0, inclusive=False), default=16.0)
    p.add_argument("--force", action="store_true",
                   help="write the bundle even if it does not beat the base (recorded in the manifest)")
    p.add_argument("--onnx", action="store_true", help="include ONNX exports of the fine-tuned models")
    p.add_argument("--json", "--report", dest="report", metavar="PATH",
                   help="write the outcome (comparison, gate checks, history) as JSON here (--report: old name)")
    _add_key_options(p, verify=True, sign=True)
    _add_train_options(p, epochs=25, lr=3e-3)
    p.set_defaults(func=_finetune)

    p = sub.add_parser("evaluate", help="evaluate bundles against the base on datasets' test splits",
                       description="Base vs fine-tuned on each dataset's held-out test split: traffic-light "
                                   "accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix; MAE, "
                                   "bias and error percentiles of the regression outputs.")
    p.add_argument("--base", required=True, help="base bundle directory")
    p.add_argument("--bundle", action="append", default=[], metavar="REGION=DIR",
                   help="a region bundle to compare (repeatable)")
    p.add_argument("--data", action="append", default=[], metavar="REGION=DIR",
                   help="dataset per region (repeatable, at least one; any region name)")
    p.add_argument("--primary-metric", choices=PRIMARY_METRICS,
                   help="the metric the comparison is about (default: the region's declared one for the "
                        "synthetic regions, else inferred from the labels)")
    p.add_argument("--markdown", help="write the summary table here")
    p.add_argument("--json", dest="json_out", nargs="?", const="-", metavar="PATH",
                   help="the results as JSON: on stdout instead of the tables, or into PATH")
    p.add_argument("--plot", type=plot_path, help="write the plot here (.png, .svg or .pdf): confusion matrices and "
                   "error percentiles")
    _add_key_options(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="export a bundle's resolved models to ONNX")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--base", help="base bundle (needed for delta bundles)")
    p.add_argument("--out", required=True, help="output directory for perception.onnx and decision.onnx")
    _add_key_options(p)
    p.set_defaults(func=_export)

    p = sub.add_parser("train-all", help="the full recipe: data, base, every region, evaluation, global model")
    p.add_argument("--workdir", default=".cache/train", help="datasets and intermediate files")
    p.add_argument("--bundles", default="bundles", help="where the bundles go")
    p.add_argument("--results", default="docs/results", help="where adaptation.{md,json,png} go")
    p.add_argument("--no-global", action="store_true", help="skip the global-model comparison")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test of the whole recipe)")
    p.add_argument("--reuse-base", action="store_true", help="keep an existing base bundle instead of retraining")
    p.add_argument("--regions", nargs="+", help="fine-tune only these regions")
    _add_key_options(p, verify=False, sign=True)
    p.set_defaults(func=_train_all)


def _dist():
    from regionadapt_ros.adaptation.train import init_distributed

    return init_distributed()


def _check_outputs(args: argparse.Namespace) -> None:
    """What the run will write, checked before it trains (an hour of training must not end in "--out exists and
    is not a bundle"): the bundle directory, that it is not the base it starts from, and the report's folder."""
    from regionadapt_ros.commands.output_paths import check_file_output, check_parent_is_dir
    from regionadapt_ros.core.bundle.format import MANIFEST_NAME, REGION_ID_PATTERN
    from regionadapt_ros.core.errors import BundleError, ConfigError
    from regionadapt_ros.core.output_dir import replaceable_dir

    out = replaceable_dir(args.out, lambda d: (d / MANIFEST_NAME).is_file(), "bundle", BundleError)
    base = getattr(args, "base", None)
    if base is not None and Path(base).resolve() == out.resolve():
        raise ConfigError("--out", f"{args.out} is the --base bundle: the fine-tune would replace the base it is a "
                                   "delta of; choose another directory")
    region = getattr(args, "region", None)
    if region is not None and not REGION_ID_PATTERN.match(region):
        raise ConfigError("--region", f"{region!r} must be letters, digits, '_', '-' or '.'")
    check_parent_is_dir("--out", out)
    data = getattr(args, "data", None)
    inputs = [*(data if isinstance(data, list) else [data]), base, *(getattr(args, "home_data", None) or []),
              *(getattr(args, "key", None) or []), getattr(args, "sign_key", None)]
    # the report lands on none of the inputs (a dataset's meta.json, the base's manifest) nor in the bundle
    check_file_output("--json", getattr(args, "report", None), protected=[*inputs, out])


def _train_base(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.workflow import train_base

    _check_outputs(args)
    _check_keys(args)
    dist = _dist()
    path = train_base(args.data, args.out, _config(args, "full"), dist, with_onnx=not args.no_onnx,
                      sign_key=args.sign_key)
    if dist.main:
        print(f"base bundle: {path}")
    return 0


def primary_metric_for(region: str, labels, requested: str | None) -> tuple[str, str]:
    """The primary metric and why: ``requested``; else a synthetic region's declared metric when the data labels
    it; else the one the labels support (evaluate.infer_primary_metric)."""
    import numpy as np

    from regionadapt_ros.adaptation.evaluate import infer_primary_metric
    from regionadapt_ros.adaptation.regions import REGIONS
    from regionadapt_ros.core.contracts import LABELS
    from regionadapt_ros.core.errors import ConfigError

    column = {"tl_macro_f1": "tl_state", "lane_offset_mae": "lane_offset", "heading_mae": "heading_error",
              "obstacle_distance_mae": "obstacle_distance", "steering_mae": "steering", "accel_mae": "accel"}
    if requested is not None:
        if requested in column and np.isnan(labels[:, LABELS.index(column[requested])]).all():
            # it would be NaN for both models, and "+nan%, NOT better" says nothing of why
            raise ConfigError("--primary-metric", f"{requested}: the data labels no {column[requested]}; choose a "
                                                  "metric the data labels")
        return requested, "--primary-metric"
    if region in REGIONS:
        declared = REGIONS[region].primary_metric
        if not np.isnan(labels[:, LABELS.index(column[declared])]).all():
            return declared, f"declared by the synthetic region {region}"
    try:
        metric, why = infer_primary_metric(labels)
    except ValueError as exc:
        raise ConfigError("--primary-metric", str(exc)) from None
    return metric, f"inferred: {why}"


def _finetune(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.drift import DriftTolerance, unlabelled_outputs
    from regionadapt_ros.adaptation.regions import REGIONS
    from regionadapt_ros.adaptation.workflow import (
        base_weights_of,
        dataset_region,
        finetune,
        load_split,
        resolve_home_data,
        write_json,
    )
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.paths import cache_dir

    if not (args.drift_tolerance > 0):
        raise ConfigError("--drift-tolerance", f"must be a positive number, got {args.drift_tolerance}")
    _check_outputs(args)
    region = args.region or dataset_region(args.data)
    _warn_region_mismatch(region, args.data, None)
    train_labels = load_split(args.data, "train").labels
    primary, why = primary_metric_for(region, train_labels, args.primary_metric)
    rules = None
    if region in REGIONS:
        spec = REGIONS[region]
        rules = {"speed_limit_kph": round(spec.speed_limit_mps * 3.6), "driving_side": spec.driving_side}
    _check_keys(args)
    dist = _dist()
    home_dirs: list = []
    unlabelled = unlabelled_outputs(train_labels)
    if unlabelled:
        _, manifest = base_weights_of(args.base, args.key)
        home_dirs, source = resolve_home_data(manifest, args.home_data, cache_dir() / "home")
        if dist.main:
            print(f"{region}: the data does not label {', '.join(m.removesuffix('_mae') for m in unlabelled)}: "
                  f"they are kept at the base's outputs and checked; home data: {source}")
    if dist.main:
        print(f"{region}: primary metric {primary} ({why})")
    outcome = finetune(region, args.data, args.base, args.out, _config(args, args.method), primary, rules=rules,
                       force=args.force, dist=dist, with_onnx=args.onnx, trusted_keys=args.key,
                       sign_key=args.sign_key, home_data=home_dirs,
                       tolerance=DriftTolerance(output_fraction=args.drift_tolerance))
    if not dist.main or outcome is None:
        return 0
    c = outcome.comparison
    regressions = ", ".join(f"{k} {v:+.1%}" for k, v in sorted(c["regressions"].items())) or "none"
    print(f"{region}: {primary} base {c['base']:.4f} → fine-tuned {c['fine_tuned']:.4f} "
          f"({c['relative_improvement']:+.1%}); other labelled metrics worse by > 5 %: {regressions}")
    gate = c.get("unlabelled_outputs")
    if gate is not None:
        worst = max(gate["checks"], key=lambda ch: ch["value"] / ch["limit"] if ch["limit"] else 0, default=None)
        if gate["refusals"]:
            print(f"{region}: unlabelled outputs drifted from the base:")
            for reason in gate["refusals"]:
                print(f"  - {reason}")
        elif worst is not None:
            print(f"{region}: unlabelled outputs kept: {len(gate['checks'])} checks passed (closest: "
                  f"{worst['output']} on {worst['data']} data at {worst['value'] / worst['limit']:.0%} of its limit)")
        for note in gate["not_checked"]:
            print(f"{region}: not checked: {note}")
    if outcome.bundle:
        print(f"bundle: {outcome.bundle}" + (" (kept with --force)" if outcome.forced else ""))
    elif not c["beats_base"]:
        print("no bundle written: the base is not beaten")
    else:
        print("no bundle written: the outputs the data does not label drifted (see above; --force keeps it)")
    if args.report:
        write_json(args.report, outcome.as_dict())
    return 0 if outcome.kept else 3


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from regionadapt_ros.core.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(what, f"expected REGION=DIR, got {item!r}")
        k, v = item.split("=", 1)
        if k in out:
            # a dict would keep the last one silently: the report would leave the first out
            raise ConfigError(what, f"region {k!r} is given twice ({out[k]} and {v}); give each region once "
                                    "(import several drives of one region into one dataset)")
        out[k] = v
    return out


def _warn_region_mismatch(region: str, data_dir: str | None, bundle_dir: str | None) -> None:
    """A warning when the dataset or the bundle says it is of another region than the one named (its rules and
    primary metric would be those of the region named)."""
    import sys

    from regionadapt_ros.adaptation.workflow import dataset_region
    from regionadapt_ros.core import bundle as bundle_io

    if data_dir is not None:
        of_data = dataset_region(data_dir)
        if of_data != region:
            print(f"warning: {data_dir} is a dataset of region {of_data!r}, used as {region!r}", file=sys.stderr)
    if bundle_dir is not None:
        try:
            of_bundle = bundle_io.read_manifest(Path(bundle_dir)).get("region")
        except Exception:  # the reading that follows names what is wrong with it
            return
        if of_bundle != region:
            print(f"warning: {bundle_dir} is a bundle of region {of_bundle!r}, evaluated as {region!r}",
                  file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation import evaluation_report, report
    from regionadapt_ros.adaptation.evaluate import compare, detailed_metrics, metrics, predict
    from regionadapt_ros.adaptation.workflow import base_weights_of, load_split, serving_weights_of, write_json
    from regionadapt_ros.core.errors import ConfigError

    if not args.data:
        raise ConfigError("--data", "nothing to evaluate: give at least one --data REGION=DIR (a dataset directory "
                                    "from regionadapt data generate/import); its test split is evaluated")
    _check_keys(args)
    bundles, datas = _pairs(args.bundle, "--bundle"), _pairs(args.data, "--data")
    from regionadapt_ros.commands.output_paths import check_file_output

    # before evaluating: the outputs land on no input (a dataset's meta.json, a bundle's manifest or weights)
    inputs = [args.base, *bundles.values(), *datas.values(), *args.key]
    written: list[str] = []
    for option, path in (("--json", None if args.json_out == "-" else args.json_out), ("--markdown", args.markdown),
                         ("--plot", args.plot)):
        check_file_output(option, path, protected=[*inputs, *written])
        if path is not None:
            written.append(path)
    unused = sorted(set(bundles) - set(datas))
    if unused:
        raise ConfigError("--bundle", f"no --data for region(s) {', '.join(unused)}: a bundle is evaluated on its "
                                      "region's dataset")
    base, _ = base_weights_of(args.base, args.key)
    results, entries = [], []
    for region, data_dir in datas.items():
        _warn_region_mismatch(region, data_dir, bundles.get(region))
        test = load_split(data_dir, "test")
        primary, why = primary_metric_for(region, test.labels, args.primary_metric)
        pred = predict(base, test)
        base_result = {"metrics": metrics(pred, test.labels), "details": detailed_metrics(pred, test.labels)}
        tuned_result = comparison = None
        if region in bundles:
            tuned = serving_weights_of(bundles[region], base, args.key or None)
            pred = predict(tuned, test)
            tuned_result = {"metrics": metrics(pred, test.labels), "details": detailed_metrics(pred, test.labels)}
            comparison = compare(primary, base_result["metrics"], tuned_result["metrics"])
        results.append({"region": region, "data": str(data_dir), "samples": len(test), "primary_metric": primary,
                        "primary_reason": why, "bundle": bundles.get(region), "comparison": comparison,
                        "base": base_result, "fine_tuned": tuned_result})
        tuned_m = tuned_result["metrics"] if tuned_result else base_result["metrics"]
        outcome = {"region": region, "method": "bundle" if region in bundles else "base",
                   "comparison": comparison or compare(primary, base_result["metrics"], tuned_m),
                   "base_metrics": base_result["metrics"], "tuned_metrics": tuned_m,
                   "kept": region in bundles, "forced": False}
        entries.append(report.region_entry(outcome))
    table = report.markdown_table(entries)
    if args.json_out == "-":
        print(json.dumps(_finite({"regions": results}), indent=2))
    else:
        print(evaluation_report.text_report(results))
        if args.json_out:
            write_json(args.json_out, _finite({"regions": results}))
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.plot:
        evaluation_report.plot_evaluation(results, args.plot)
        if args.json_out != "-":
            print(f"plot: {args.plot}")
    return 0


def _finite(o):
    """JSON-ready: numpy scalars as numbers, NaN and infinities (a metric without labels) as null."""
    import math

    import numpy as np

    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _export(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.workflow import base_weights_of, serving_weights_of
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.models.export import export_onnx

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(out, "--out exists and is not a directory (export writes perception.onnx and "
                          "decision.onnx into a directory)")
    if (out / "manifest.json").exists() or (out / "meta.json").exists():
        # a bundle's ONNX files are listed with their hashes in its manifest: overwritten, it no longer verifies
        what = "a bundle" if (out / "manifest.json").exists() else "a dataset"
        raise ConfigError(out, f"--out is {what}; export writes its ONNX files into a directory of their own")
    _check_keys(args)
    base = base_weights_of(args.base, args.key)[0] if args.base else None
    weights = serving_weights_of(args.bundle, base, args.key or None)
    for model, w in weights.items():
        path = export_onnx(model, out / f"{model}.onnx", dict(w))
        print(f"{model}: {path}")
    return 0


def _train_all(args: argparse.Namespace) -> int:
    from regionadapt_ros.adaptation.recipe import Recipe, run

    recipe = Recipe.quick() if args.quick else Recipe()
    from regionadapt_ros.adaptation.recipe import REGION_ORDER

    _check_keys(args)
    summary = run(args.workdir, args.bundles, args.results, recipe, regions=tuple(args.regions or REGION_ORDER),
                  with_global=not args.no_global, reuse_base=args.reuse_base, sign_key=args.sign_key)
    for e in summary["regions"]:
        print(f"{e['region']:12s} {e['primary_metric']:14s} base {e['base']:.4f} → {e['fine_tuned']:.4f} "
              f"({e['relative_improvement']:+.1%}) {'kept' if e['kept'] else 'NOT kept'}")
    print(json.dumps({"total_seconds": round(summary["total_seconds"])}))
    return 0
