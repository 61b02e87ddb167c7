"""``regionadapt drive``: closed-loop routes in the synthetic world, the product driving; ``regionadapt score
BAG --route ROUTE``: the same score from a bag recorded next to the CARLA ROS bridge (or by ``drive``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regionadapt_ros.commands.argtypes import number, seed_arg

# What a closed-loop run may be asked for: a camera rate the models and the scorer make sense at, a route that
# fits in memory as a world (the world is generated along its whole length), a number of routes a report holds.
MIN_HZ, MAX_HZ = 1.0, 100.0
MAX_ROUTE_M = 20_000.0
MIN_ROUTE_M = 10.0  # the leaderboard's completion distance: a shorter route is complete before it starts
MAX_ROUTES = 10_000
POSITIVE = number(float, 0.0, inclusive=False)


def register(sub: argparse._SubParsersAction) -> None:
    from regionadapt_ros.paths import config_dir

    p = sub.add_parser("drive", help="closed loop: the models drive seeded routes in the synthetic world, scored "
                                     "as the CARLA leaderboard 2.0 scores them")
    p.add_argument("--region", help="region of the routes (default urban_day)")
    p.add_argument("--course", choices=("demo",), help="instead of --region: the five-region demo course, with "
                                                       "geofences and hot swaps")
    p.add_argument("--routes", type=number(int, 1, MAX_ROUTES), default=1,
                   help=f"number of seeded routes (default 1, at most {MAX_ROUTES})")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the first route (routes use seed, seed+1, ...)")
    p.add_argument("--length", type=number(float, MIN_ROUTE_M, MAX_ROUTE_M),
                   help=f"route length in metres (default: the region's; {MIN_ROUTE_M:g}-{MAX_ROUTE_M:g})")
    p.add_argument("--agent", choices=("product", "expert"), default="product",
                   help="product: the models through DrivingSession; expert: the rule-based driver")
    p.add_argument("--bundle", action="append", default=[], metavar="REGION=DIR",
                   help="serve REGION with this bundle instead of regions.yaml's (repeatable)")
    p.add_argument("--regions-config", default=str(config_dir() / "regions.yaml"))
    p.add_argument("--bundle-dir", help="override regions.yaml's bundle_dir")
    p.add_argument("--backend", default="onnxruntime", choices=("auto", "onnxruntime", "torch", "tensorrt"))
    p.add_argument("--hz", type=number(float, MIN_HZ, MAX_HZ), default=10.0,
                   help=f"simulation and camera rate (default 10; {MIN_HZ:g}-{MAX_HZ:g} Hz)")
    p.add_argument("--out", default="drive", help="output directory: one bag per route, report.json/.md")
    p.add_argument("--no-bag", action="store_true", help="score only, write no bags")
    p.add_argument("--no-sensors", action="store_true", help="leave camera and lidar out of the bags")
    p.add_argument("--summary-json", help="write the aggregate score as JSON here")
    p.set_defaults(func=_drive)

    p = sub.add_parser("score", help="score a bag recorded next to the CARLA ROS bridge against a route "
                                     "(CARLA leaderboard 2.0 criteria)")
    p.add_argument("bag", help="rosbag2 directory or .mcap file")
    p.add_argument("--route", required=True, help="route: CSV (x,y[,speed_limit_kph]), JSON (as `regionadapt "
                                                  "drive` writes next to its bags) or a leaderboard route XML")
    p.add_argument("--route-id", help="which <route id=...> of a leaderboard routes XML the bag drove (required "
                                      "when the file holds several)")
    p.add_argument("--role-name", default="ego_vehicle", help="the ego's role name (/carla/<role>/...)")
    p.add_argument("--odom-topic", help="default /carla/<role>/odometry")
    p.add_argument("--collision-topic", help="default /carla/<role>/collision")
    p.add_argument("--lane-invasion-topic", help="default /carla/<role>/lane_invasion")
    p.add_argument("--lane-width", type=POSITIVE, help="route lanes = ± width/2 around the route line")
    p.add_argument("--speed-limit-kph", type=POSITIVE, help="one speed limit for the whole route")
    p.add_argument("--min-timeout", type=POSITIVE, help="route timeout at the start [s] (leaderboard: 300)")
    p.add_argument("--blocked-time", type=POSITIVE,
                   help="blocked after this long below 0.1 m/s [s] (leaderboard: 180)")
    p.add_argument("--json", dest="json_out", help="write the score as JSON here")
    p.set_defaults(func=_score)


def _pairs(items: list[str]) -> dict[str, str]:
    from regionadapt_ros.core.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--bundle", f"expected REGION=DIR, got {item!r}")
        k, v = item.split("=", 1)
        if not k or not v:
            raise ConfigError("--bundle", f"expected REGION=DIR, got {item!r}")
        if not Path(v).is_dir():
            raise ConfigError("--bundle", f"{k}: bundle directory {v} does not exist")
        out[k] = str(Path(v).resolve())
    return out


def drive(args: argparse.Namespace, specs, out_dir: Path, geofences: bool) -> list:
    """Run ``specs`` with the agent the arguments name; bags and report under ``out_dir``."""
    from regionadapt_ros.core.errors import DataError
    from regionadapt_ros.sim.agents import ExpertAgent, ProductAgent
    from regionadapt_ros.sim.course import Course
    from regionadapt_ros.sim.geo import write_course_geofences
    from regionadapt_ros.sim.recording import ns_to_s
    from regionadapt_ros.sim.runner import RunOptions, run_route

    results = []
    for spec in specs:
        course = Course(spec)
        route_dir = out_dir / spec.route_id
        if not args.no_bag and (route_dir / "bag").exists():
            raise DataError(route_dir / "bag", "output bag already exists; choose another --out")
        fence_file = None
        if geofences:
            fence_file = write_course_geofences(route_dir / "geofences.geojson", course)
        if args.agent == "expert":
            agent = ExpertAgent()
        else:
            agent = ProductAgent("product", args.regions_config, bundle_dir=args.bundle_dir,
                                 bundles=_pairs(args.bundle), geofence_file=fence_file, backend=args.backend,
                                 strict=True)
        try:
            options = RunOptions(record_dir=None if args.no_bag else route_dir, record_sensors=not args.no_sensors,
                                 gnss=geofences)
            result = run_route(spec, agent, options, course)
        finally:
            agent.close()
        s = result.score
        print(f"{spec.route_id}: DS {s.driving_score:.3f}  RC {s.route_completion:.3f}  penalty "
              f"{s.infraction_penalty:.3f}  {s.status}  ({result.sim_s:.1f} s simulated, "
              f"{result.real_time_factor:.1f}x real time)")
        t0 = ns_to_s(options.t0_ns)
        for event in s.events:
            print(f"  {event.t - t0:6.1f} s  {event.kind}: {event.message}")
        results.append(result)
    return results


def _check_outputs(args: argparse.Namespace, out_dir: Path, specs) -> None:
    """Every path the run writes, checked before the first route: a second route's existing bag must not be
    found after the first one was written (every retry would then fail on the first)."""
    from regionadapt_ros.commands.output_paths import check_file_output, check_output_dir
    from regionadapt_ros.core.errors import DataError

    check_output_dir("--out", out_dir)
    bags = [out_dir / spec.route_id / "bag" for spec in specs]
    if not args.no_bag:
        for bag in bags:
            if bag.exists():
                raise DataError(bag, "output bag already exists; choose another --out")
    for spec in specs:  # a file at a later route's folder would fail the run after the first routes
        check_output_dir("--out", out_dir / spec.route_id)
    for name in ("report.md", "report.json"):
        if (out_dir / name).is_dir():
            raise DataError(out_dir / name, "is a directory; the run writes its report there")
    written = [*(out_dir / spec.route_id for spec in specs), out_dir / "report.md", out_dir / "report.json"]
    inputs = [args.regions_config, args.bundle_dir, *(given.split("=", 1)[-1] for given in args.bundle)]
    check_file_output("--summary-json", args.summary_json, protected=[*written, *inputs])
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)  # as replay and demo make it


def _drive(args: argparse.Namespace) -> int:
    from regionadapt_ros.commands.argtypes import MAX_SEED
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.sim.course import DEMO_COURSE, RouteSpec, region_routes
    from regionadapt_ros.sim.report import write_report

    _pairs(args.bundle)  # a malformed --bundle is refused before anything runs
    # Options that contradict each other are refused, not silently dropped.
    if args.course == "demo" and (args.region is not None or args.length is not None):
        raise ConfigError("--course", "the demo course has its own regions and length; drop --region/--length "
                                      "(or --course to drive one region)")
    if args.agent == "expert" and (args.bundle or args.backend != "onnxruntime"):
        raise ConfigError("--agent", "the expert drives without models: --bundle and --backend do not apply")
    if args.seed + args.routes - 1 > MAX_SEED:
        # the world's seeds are 32-bit: the route after 2**32 - 1 would repeat the one of seed 0
        raise ConfigError("--seed", f"routes use seeds {args.seed}..{args.seed + args.routes - 1}; the last must be "
                                    f"at most {MAX_SEED}")
    if args.course == "demo":
        specs = [RouteSpec(f"demo-{seed}", DEMO_COURSE, seed, hz=args.hz)
                 for seed in range(args.seed, args.seed + args.routes)]
    else:
        from regionadapt_ros.adaptation.regions import get_region

        region = args.region or "urban_day"
        try:
            get_region(region)
        except ValueError as exc:
            raise ConfigError("--region", str(exc)) from None
        specs = region_routes(region, args.routes, args.seed, args.length, hz=args.hz)
    out_dir = Path(args.out)
    _check_outputs(args, out_dir, specs)
    results = drive(args, specs, out_dir, geofences=args.course == "demo")
    doc = write_report(results, out_dir, plots=len(results) <= 10)
    agg = doc["aggregate"]
    print(f"mean driving score {agg['driving_score']:.3f} [{agg['driving_score_ci'][0]:.3f}, "
          f"{agg['driving_score_ci'][1]:.3f}], route completion {agg['route_completion']:.3f} over "
          f"{len(results)} route(s); report: {out_dir / 'report.md'}")
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(agg, indent=2) + "\n")
    return 0


def _score(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from regionadapt_ros.commands.output_paths import check_file_output
    from regionadapt_ros.core.safe_read import printable_text
    from regionadapt_ros.scoring.carla_bag import BagTopics, route_extras, score_bag
    from regionadapt_ros.scoring.criteria import CriteriaConfig
    from regionadapt_ros.scoring.route import load_route

    check_file_output("--json", args.json_out, protected=[args.bag, args.route])
    route = load_route(args.route, lane_width_m=args.lane_width, speed_limit_kph=args.speed_limit_kph,
                       route_id=args.route_id)
    scenarios, criteria, route_id = route_extras(args.route)
    route_id = route_id if route_id is not None else args.route_id
    criteria = criteria or CriteriaConfig()
    if args.min_timeout is not None:
        criteria = replace(criteria, min_timeout_s=args.min_timeout)
    if args.blocked_time is not None:
        criteria = replace(criteria, blocked_time_s=args.blocked_time)
    topics = BagTopics(args.role_name, args.odom_topic, args.collision_topic, args.lane_invasion_topic)
    result = score_bag(args.bag, route, topics=topics, criteria=criteria, scenarios=scenarios, route_id=route_id)
    s = result.score
    print(f"driving score {s.driving_score:.3f}  route completion {s.route_completion:.3f}  infraction penalty "
          f"{s.infraction_penalty:.3f}  {s.status}")
    for kind, n in s.counts().items():
        if n:
            print(f"  {kind}: {n}")
    for note in result.notes:
        print(printable_text(f"note: {note}"))  # notes quote the bag's topic names
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result.as_dict(), indent=2, default=str) + "\n")
    return 0
