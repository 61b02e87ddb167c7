"""The closed-loop steps of the recipe: DAgger rounds for the base and for every region, the global model's
per-region bundles, and the closed-loop comparison written to docs/results/closed_loop.{json,md,png}.

DAgger (``sim.dagger``): a round rolls the current model out on seeded routes of its region, the expert labels
the visited states, and the next model is trained with them added to the region's data:
- the base (home region ``urban_day``): training continues from the current base for a few epochs on the base
  mix plus every round's on-policy states (a base retrained from scratch each round would cost the base's
  whole training time again);
- a region: fine-tuned again from the base, with the region's method, on the region's data plus every
  round's on-policy states. The bundle keeps the open-loop rule (written only if it beats the base on the
  primary metric of the region's held-out test split).
The round's score is the closed-loop score of its rollouts (policy of round k = trained with the data of
rounds < k), so the effect of each round shows without extra driving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from regionadapt_ros.adaptation.train import TrainArrays, TrainConfig, Trainer
from regionadapt_ros.adaptation.workflow import (
    base_weights_of,
    dataset_region,
    finetune,
    load_split,
    write_model_bundle,
)

_LOG = logging.getLogger("regionadapt_ros.recipe")


def dagger_base(base_bundle: Path, base_dirs: list[Path], home: str, cfg: TrainConfig, rounds: int, routes: int,
                stride: int, workdir: Path, regions_file: Path, bundle_dir: Path, workers: int,
                sign_key: str | Path | None = None) -> dict[str, Any]:
    """DAgger rounds of the base in its home region; rewrites ``base_bundle`` after each round (signed with
    ``sign_key`` when given)."""
    from regionadapt_ros.adaptation.evaluate import evaluate
    from regionadapt_ros.sim.dagger import DaggerConfig, collect_round, round_summary
    from regionadapt_ros.sim.jobs import AgentSpec

    dcfg = DaggerConfig(rounds, routes, stride, workers, expert_routes=routes)
    history, extra = [], []
    for k in range(rounds):
        t = time.time()
        rows, data = collect_round(home, AgentSpec(f"base round {k}", bundles={home: str(base_bundle.resolve())}),
                                   k, workdir / "dagger" / "base" / f"round_{k}", regions_file, bundle_dir, dcfg)
        n = 0 if data is None else len(load_split(data, "train")) + len(load_split(data, "val"))
        history.append(round_summary(k, f"base round {k}", rows, n))
        _LOG.info("base DAgger round %d: DS %.3f on %d routes, %d states (%.0f s)", k,
                  history[-1]["driving_score"], history[-1]["routes"], n, time.time() - t)
        if data is not None:
            extra.append(data)
        weights, _ = base_weights_of(base_bundle)
        train = TrainArrays.concat([load_split(d, "train") for d in [*base_dirs, *extra]])
        val = TrainArrays.concat([load_split(d, "val") for d in [*base_dirs, *extra]])
        result = Trainer(cfg, weights).fit(train, val)
        per_region = {dataset_region(d): evaluate(result.weights, load_split(d, "test")) for d in base_dirs}
        metrics = {"kind": "base", "test": per_region, "history": result.history, "train_samples": len(train),
                   "datasets": [str(d) for d in base_dirs], "dagger_round": k + 1,
                   "dagger_datasets": [str(d) for d in extra]}
        write_model_bundle(base_bundle, "base", result, None, metrics, with_onnx=True, sign_key=sign_key)
    return {"rounds": history, "home_region": home}


def dagger_region(region: str, data_dir: Path, base_bundle: Path, out_bundle: Path, cfg: TrainConfig,
                  primary_metric: str, rules: dict[str, Any], rounds: int, routes: int, stride: int, workdir: Path,
                  regions_file: Path, bundle_dir: Path, workers: int, sign_key: str | Path | None = None
                  ) -> tuple[dict[str, Any], Any]:
    """DAgger rounds of one region's bundle (``out_bundle``, already fine-tuned once); (history, the last
    fine-tune outcome or None when no round produced a bundle)."""
    from regionadapt_ros.sim.dagger import DaggerConfig, collect_round, round_summary
    from regionadapt_ros.sim.jobs import AgentSpec

    dcfg = DaggerConfig(rounds, routes, stride, workers, expert_routes=routes)
    history, extra, outcome = [], [], None
    for k in range(rounds):
        t = time.time()
        policy = AgentSpec(f"{region} round {k}", bundles={region: str(out_bundle.resolve())})
        rows, data = collect_round(region, policy, k, workdir / "dagger" / region / f"round_{k}", regions_file,
                                   bundle_dir, dcfg)
        n = 0 if data is None else len(load_split(data, "train")) + len(load_split(data, "val"))
        history.append(round_summary(k, f"{region} round {k}", rows, n))
        _LOG.info("%s DAgger round %d: DS %.3f on %d routes, %d states (%.0f s)", region, k,
                  history[-1]["driving_score"], history[-1]["routes"], n, time.time() - t)
        if data is not None:
            extra.append(data)
        result = finetune(region, data_dir, base_bundle, out_bundle, cfg, primary_metric, rules=rules,
                          extra_data=list(extra), sign_key=sign_key)
        if result is not None and result.kept:
            outcome = result
    return {"rounds": history}, outcome


def global_bundles(weights: dict, regions: tuple[str, ...], region_order: tuple[str, ...], out_dir: Path
                   ) -> dict[str, str]:
    from regionadapt_ros.adaptation.global_model import write_global_bundles

    return {r: str(p.resolve()) for r, p in write_global_bundles(weights, regions, region_order, out_dir).items()}


def closed_loop_results(regions: tuple[str, ...], home: str, bundle_dir: Path, global_dirs: dict[str, str],
                        regions_file: Path, results_dir: Path | None, routes: int, workers: int,
                        dagger: dict[str, Any], progress: bool = True,
                        variants: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Base vs regional vs global (and the expert) on ``routes`` seeded routes per region; ``variants`` ({row
    name: DrivingConfig overrides}) add rows of the regional bundles driving with other session settings."""
    from regionadapt_ros.core.bundle_store import load_regions_document
    from regionadapt_ros.sim import evaluation
    from regionadapt_ros.sim.jobs import AgentSpec

    base_dir = str((bundle_dir / "base").resolve())
    mapping = load_regions_document(regions_file)["regions"]
    def bundle_of(region: str) -> str:
        entry = mapping.get(region)
        return str(entry.get("bundle", region)) if isinstance(entry, dict) else region

    missing = [r for r in regions if not (bundle_dir / bundle_of(r) / "manifest.json").exists()]

    def agents(region: str) -> dict[str, AgentSpec]:
        # a region whose fine-tune did not beat the base has no bundle: the base serves it
        regional = AgentSpec("regional", bundles={region: base_dir} if region in missing else {})
        out = {"base": AgentSpec("base", bundles={region: base_dir}), "regional": regional}
        if region in global_dirs:
            out["global"] = AgentSpec("global", bundles={region: global_dirs[region]})
        for name, overrides in (variants or {}).items():
            out[name] = AgentSpec(name, bundles=dict(regional.bundles), driving_overrides=dict(overrides))
        return out

    doc = evaluation.compare_regions(regions, agents, regions_file, bundle_dir,
                                     evaluation.ComparisonConfig(routes=routes, workers=workers, progress=progress))
    for entry in doc["regions"]:
        region = entry["region"]
        entry["regional_bundle"] = ("base (the home region)" if region == home else
                                    "base (no regional bundle was kept)" if region in missing else region)
    doc["dagger"] = dagger
    if results_dir is not None:
        write_closed_loop_results(doc, results_dir)
    return doc


def write_closed_loop_results(doc: dict[str, Any], results_dir: Path) -> None:
    from regionadapt_ros.adaptation.workflow import write_json
    from regionadapt_ros.sim import evaluation

    results_dir = Path(results_dir)
    write_json(results_dir / "closed_loop.json", doc)
    evaluation.plot(doc, results_dir / "closed_loop.png")
    lines = ["# Closed-loop regional driving", "",
             "Produced by `regionadapt train-all` (see README). Every model drives the same "
             f"{doc['regions'][0]['routes']} seeded routes per region (seeds {doc['seeds'][0]}–{doc['seeds'][-1]}) "
             "in the synthetic world, through the product's own path (sensor messages → `DrivingSession` → "
             "limited command → the ego), scored as the CARLA leaderboard 2.0 scores routes: driving score DS = "
             "route completion RC × infraction penalty (means over routes, 95 % bootstrap confidence intervals); "
             "infractions per km driven. base = the model trained in its home city; regional = the region's "
             "bundle (the base itself in `urban_day`); global = one model trained on every region with the "
             "region as an input; expert = the rule-based driver whose commands the models imitate.", "",
             evaluation.markdown(doc), "",
             "Regional minus base, paired by route seed:", ""]
    for entry in doc["regions"]:
        if "regional_minus_base" in entry:
            d = entry["regional_minus_base"]
            lines.append(f"- {entry['region']}: {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
                         f"{' (CIs do not overlap)' if entry.get('regional_above_base_beyond_ci') else ''}")
    guard_rows = [e for e in doc["regions"] if any(isinstance(v, dict) and v.get("emergency_brake") is not None
                                                   and n != "regional" and "guard" in n for n, v in e.items())]
    if guard_rows:
        lines += ["", "## The emergency-brake guard, on and off", "",
                  "The regional bundles on the same routes with the collision-risk guard on (the default, the "
                  "`regional` row) and off. Overrides: braking episodes the guard imposed; with the guard off, "
                  "the episodes it would have imposed (suppressed).", "", guard_markdown(doc), ""]
    if doc.get("dagger"):
        lines += ["", "## DAgger rounds", "",
                  "Each round's policy drove routes of its own (seeds 50000 + 1000 × round, never the evaluation "
                  "seeds); the expert labelled the states it visited and the next round's policy was trained "
                  "with them added. Round k's policy was trained with the data of rounds 0..k-1 (round 0: none). "
                  "The table above is the last policy on the evaluation routes.", "",
                  evaluation.dagger_markdown(doc["dagger"])]
    lines += ["", f"Closed-loop evaluation: {doc['ticks']} ticks ({doc['simulated_s']:.0f} s simulated) in "
              f"{doc['wall_s']:.0f} s on {doc['workers']} worker processes.", "",
              "![closed-loop driving score](closed_loop.png)", ""]
    (results_dir / "closed_loop.md").write_text("\n".join(lines))


def base_dagger_config(base_cfg: TrainConfig, epochs: int, lr: float) -> TrainConfig:
    return replace(base_cfg, epochs=epochs, lr=lr, patience=max(1, min(base_cfg.patience, epochs)))


def guard_markdown(doc: dict[str, Any]) -> str:
    """Per region: DS, RC, collisions per km and the guard's counts, with the guard on (``regional``) and off."""
    lines = ["| region | guard | DS [95 % CI] | RC | collisions / km (vehicle, layout) | overrides (frames) | "
             "would-be overrides while off (frames) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for entry in doc["regions"]:
        for name, label in (("regional", "on"), *((n, "off") for n in entry if n != "regional" and "guard" in n
                                                    and isinstance(entry[n], dict))):
            v = entry.get(name)
            if not isinstance(v, dict) or "driving_score" not in v:
                continue
            g = v.get("emergency_brake", {})
            per_km = v["infractions_per_km"]
            lo, hi = v["driving_score_ci"]
            lines.append(f"| {entry['region']} | {label} | {v['driving_score']:.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{v['route_completion']:.3f} | {per_km.get('collisions_vehicle', 0):.2f}, "
                         f"{per_km.get('collisions_layout', 0):.2f} | {g.get('overrides', 0)} "
                         f"({g.get('override_frames', 0)}) | {g.get('suppressed', 0)} "
                         f"({g.get('suppressed_frames', 0)}) |")
    return "\n".join(lines) + "\n"
