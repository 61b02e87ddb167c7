"""``regionadapt engine build``: build every TensorRT engine the configured region bundles need, fill the
engine cache, and exit (build-only mode: run it once after installing bundles or upgrading TensorRT/JetPack,
so that the vehicle never builds an engine while driving).

- ``--refit`` (default, as the driving node's ``tensorrt_refit``): one refittable engine per model
  architecture (``<model>-refit``); every region is applied to it by refitting at swap time. Each region's
  bundle is still read and its weights checked against the graph the refitter addresses, so a bundle that
  could not be refitted fails here, not on the road.
- ``--no-refit`` (the node's ``tensorrt_refit: false``): one engine per region and model, built from the
  region's ONNX (the exported graph with the region's resolved weights) and named by its sha256, exactly as
  ``TensorRTBackend`` looks it up.

The engines are found by a driving node whose ``tensorrt_*`` parameters say the same (precision, refit, DLA
core, cache directory): the command ends by printing them. An engine built for other settings would leave the
vehicle building its engine on first use, while driving.

The orchestration (``plan_jobs``, ``build_engines``, ``build_from_regions_config``) takes an injectable
builder and device description, so it runs and is tested without TensorRT; the handler plugs in
``tensorrt_backend.build_serialized_engine`` and ``tensorrt_backend.device_env``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionadapt_ros.inference.backend import BackendError
from regionadapt_ros.inference.engine_cache import (
    BuildOptions,
    DeviceEnv,
    EngineCache,
    default_cache_dir,
    engine_label,
    ensure_plan,
    make_key,
    sha256_hex,
)

_LOG = logging.getLogger("regionadapt_ros.engine")

ARCHITECTURE_REGION = "*"  # region field of the job that builds an architecture's refittable engine

# (onnx bytes, model name, options) → plan bytes, or None when the build failed.
EngineBuilder = Callable[[bytes, str, BuildOptions], bytes | None]


@dataclass(frozen=True)
class EngineJob:
    """One engine to have in the cache: ``region`` ("*" = the architecture's refittable engine, serving
    every region), ``model_name``, and the ONNX it is built from (bytes or a path)."""

    region: str
    model_name: str
    onnx: bytes | Path


@dataclass
class JobResult:
    """What happened to one job: ``action`` "cached" (valid engine already there), "built" or "failed"."""

    region: str
    model_name: str
    label: str
    action: str
    reason: str
    plan_path: Path | None = None
    build_s: float | None = None

    def line(self) -> str:
        took = f" in {self.build_s:.1f} s" if self.build_s is not None else ""
        where = f" → {self.plan_path}" if self.plan_path is not None else ""
        return f"{self.action:6s}  {self.region:14s} {self.model_name:10s} {self.label}{took}: {self.reason}{where}"


def plan_jobs(region_weights: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
              base_graphs: Mapping[str, bytes], refit: bool) -> tuple[list[EngineJob], list[JobResult]]:
    """Jobs for ``region_weights`` ({region: {model: full named weights}}) given each model's exported graph,
    and a failed JobResult for each region/model whose weights do not fit the graph (named weight + problem).

    refit: one job per model on the base graph; every region's weights are checked against the initializers
    the refitter will address. Otherwise: one job per region and model on the region's ONNX.
    """
    from regionadapt_ros.inference import refit as refit_mod

    jobs: list[EngineJob] = []
    refused: list[JobResult] = []
    initializers = {m: refit_mod.graph_initializers(g) for m, g in base_graphs.items()} if refit else {}
    for region, models in region_weights.items():
        for model_name, graph in base_graphs.items():
            if model_name not in models:
                refused.append(JobResult(region, model_name, "-", "failed", f"bundle has no model {model_name!r}"))
                continue
            try:
                if refit:
                    refit_mod.plan_refit(model_name, models[model_name], initializers[model_name])
                else:
                    onnx = refit_mod.onnx_with_weights(graph, models[model_name], model_name)
                    jobs.append(EngineJob(region, model_name, onnx))
            except BackendError as exc:
                refused.append(JobResult(region, model_name, "-", "failed", str(exc)))
    if refit:
        jobs = [EngineJob(ARCHITECTURE_REGION, model_name, graph) for model_name, graph in base_graphs.items()]
    return jobs, refused


def build_engines(jobs: Sequence[EngineJob], cache: EngineCache, env: DeviceEnv, options: BuildOptions,
                  builder: EngineBuilder) -> list[JobResult]:
    """Make sure every job's engine is in ``cache`` (valid for ``env``), building what is missing or stale.

    A failed build is reported and the other jobs still run. Jobs that resolve to the same engine (two regions
    with identical weights) are built once.
    """
    from regionadapt_ros.inference import refit as refit_mod

    results: list[JobResult] = []
    done: dict[str, JobResult] = {}
    for job in jobs:
        data = refit_mod.onnx_bytes(job.onnx)
        if options.refittable:
            sha, kind = refit_mod.onnx_structure_sha256(data), "structure"
        else:
            sha, kind = sha256_hex(data), "bytes"
        label = engine_label(job.model_name, sha, options.refittable)
        if label in done and done[label].action != "failed":
            first = done[label]
            results.append(JobResult(job.region, job.model_name, label, "cached",
                                     f"same engine as region {first.region!r}", first.plan_path))
            continue
        key = make_key(sha, env, options, job.model_name, kind)
        try:
            _, outcome = ensure_plan(cache, label, key,
                                     lambda data=data, model=job.model_name: builder(data, model, options))
        except BackendError as exc:
            result = JobResult(job.region, job.model_name, label, "failed", str(exc))
        else:
            result = JobResult(job.region, job.model_name, label, outcome.action, outcome.reason,
                               outcome.plan_path, outcome.build_s)
        _LOG.info("%s", result.line())
        done[label] = result
        results.append(result)
    return results


def read_region_weights(regions_config: str | Path) -> tuple[dict[str, dict[str, dict[str, np.ndarray]]],
                                                              list[JobResult]]:
    """{region: {model: full weights}} of every region in regions.yaml (verified with the store's signature
    policy and resolved on the base bundle, without touching the installed-version registry), plus a failed
    JobResult for each region whose bundle was refused."""
    from regionadapt_ros.core.bundle_store import BundleStore
    from regionadapt_ros.core.errors import RegionAdaptError
    from regionadapt_ros.models.registry import reference_architectures

    store = BundleStore.from_yaml(regions_config)
    architectures = reference_architectures()
    base_loaded = store.read(store.base_region, architectures)
    base = base_loaded.resolve(None)
    weights: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    refused: list[JobResult] = []
    for region in store.regions:
        try:
            loaded = base_loaded if region == store.base_region else store.read(region, architectures)
            weights[region] = loaded.resolve(base if loaded.is_delta else None)
        except RegionAdaptError as exc:
            refused.append(JobResult(region, "-", "-", "failed", f"bundle refused: {exc}"))
    return weights, refused


def build_from_regions_config(regions_config: str | Path, options: BuildOptions, cache: EngineCache,
                              env: DeviceEnv, builder: EngineBuilder,
                              base_graphs: Mapping[str, bytes] | None = None) -> list[JobResult]:
    """Read every region's bundle, plan the engines they need, build what the cache lacks."""
    if base_graphs is None:
        from regionadapt_ros.models.export import export_onnx_bytes
        from regionadapt_ros.models.registry import MODEL_NAMES

        base_graphs = {name: export_onnx_bytes(name) for name in MODEL_NAMES}
    weights, refused = read_region_weights(regions_config)
    jobs, unfit = plan_jobs(weights, base_graphs, options.refittable)
    return refused + unfit + build_engines(jobs, cache, env, options, builder)


# --------------------------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("engine", help="TensorRT engines: build the engine cache ahead of time",
                                   description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="engine_command", metavar="ACTION")
    build = actions.add_parser("build", help="build every engine the configured region bundles need, then exit")
    build.add_argument("--regions-config", required=True, type=Path, help="regions.yaml (region → bundle)")
    build.add_argument("--precision", choices=("fp32", "fp16"), default="fp16",
                       help="engine precision (int8 needs calibration frames: use TensorRTBackend directly)")
    build.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                       help="one refittable engine per architecture (default, the driving node's tensorrt_refit); "
                            "--no-refit: one engine per region")
    build.add_argument("--cache-dir", type=Path, default=None,
                       help=f"engine cache directory (default {default_cache_dir()})")
    build.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace limit in MiB")
    build.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Jetson)")
    build.add_argument("--max-batch", type=int, default=1,
                       help="largest batch of the optimisation profile (the driving node serves batch 1 and "
                            "looks up batch-1 engines only)")
    build.set_defaults(func=_build_handler)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _build_handler(args: argparse.Namespace) -> int:
    options = BuildOptions(precision=args.precision, refittable=args.refit,
                           workspace_bytes=int(args.workspace_mib) << 20, dla_core=args.dla_core,
                           max_batch=args.max_batch)
    try:
        from regionadapt_ros.inference import tensorrt_backend

        env = tensorrt_backend.device_env()
    except BackendError as exc:
        print(f"regionadapt engine build: error: {exc}", file=sys.stderr)
        return 1
    cache = EngineCache(args.cache_dir or default_cache_dir())

    def builder(onnx: bytes, model_name: str, opts: BuildOptions) -> bytes:
        return tensorrt_backend.build_serialized_engine(onnx, model_name, opts)

    print(f"TensorRT {env.tensorrt_version} on {env.device_name} (compute capability {env.compute_capability}); "
          f"cache {cache.directory}")
    t0 = time.perf_counter()
    results = build_from_regions_config(args.regions_config, options, cache, env, builder)
    for result in results:
        print(result.line())
    failed = sum(r.action == "failed" for r in results)
    built = sum(r.action == "built" for r in results)
    print(f"{len(results)} engine(s): {built} built, {len(results) - built - failed} cached, {failed} failed "
          f"in {time.perf_counter() - t0:.1f} s")
    print(node_parameters_line(options, cache.directory.absolute()))
    return 1 if failed else 0


def node_parameters_line(options: BuildOptions, cache_dir: Path | None) -> str:
    """The driving node parameters under which it looks these engines up (what it serves with must match
    what was built, or it builds its own engine on first use, while driving)."""
    if options.max_batch != 1:
        return (f"note: the driving node serves batch 1 and looks up batch-1 engines only; these (max batch "
                f"{options.max_batch}) are for other uses of TensorRTBackend")
    dla = -1 if options.dla_core is None else options.dla_core
    cache = "" if cache_dir is None else str(cache_dir)
    return (f"the driving node serves these engines with: backend: tensorrt, tensorrt_precision: "
            f"{options.precision}, tensorrt_refit: {str(options.refittable).lower()}, tensorrt_dla_core: {dla}, "
            f"tensorrt_cache_dir: {cache!r}")
