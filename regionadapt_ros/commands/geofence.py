"""``regionadapt geofence``: validate a geofence file and replay a GNSS track against it.

    regionadapt geofence check FILE [--track TRACK [--topic TOPIC]] [--plot PNG] [--json]
        [--default-region base] [--enter-margin M] [--exit-margin M] [--min-dwell S] [--confirm S]
        [--horizon S] [--repair]
    regionadapt geofence import BOUNDARIES --out FILE [--name-property name] [--map NAME=REGION[:PRIORITY]]...
        [--priority P] [--default-region base] [--repair] [--force]

FILE is a GeoJSON fence file (see core/geofence.py). TRACK is a CSV (``t,lat,lon[,h_std][,status]`` or the
comma2k19 export ``boot_time_s,latitude_deg,longitude_deg,...``; see core/geo_track.py), a rosbag2
(directory or ``.mcap``/``.db3`` file) or a ROS 1 ``.bag`` with a ``sensor_msgs/msg/NavSatFix`` topic
(``--topic``; default: the bag's first NavSatFix topic). The track is replayed through the region resolver
with the fix stamps as the clock, and every region switch is printed with its time. Exit status 0 when the
file (and track) are valid, 1 with the reason when not. ``import`` makes FILE from a boundary file whose areas
are named by a property (see core/geofence_import.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regionadapt_ros.commands.argtypes import plot_path

NAVSATFIX_MSGTYPE = "sensor_msgs/msg/NavSatFix"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "geofence",
        help="validate geofence files and replay GNSS tracks against them",
        description="Geofences: GeoJSON Polygon/MultiPolygon features with 'region' and 'priority' properties.",
    )
    parser.set_defaults(func=lambda args: _print_help(parser))
    actions = parser.add_subparsers(dest="geofence_command", metavar="ACTION")

    check = actions.add_parser(
        "check",
        help="validate a fence file, list regions, areas and overlaps; replay a track; plot",
        description="Validate FILE; with --track, replay the track through the region resolver and print every "
        "region switch. Exit 0 when valid, 1 when not.",
    )
    check.add_argument("file", type=Path, help="GeoJSON fence file (WGS84)")
    check.add_argument(
        "--track",
        type=Path,
        help="GNSS track: CSV (t,lat,lon[,h_std] or comma2k19 boot_time_s,latitude_deg,longitude_deg) "
        "or a rosbag2 directory / .mcap / .db3, or a ROS 1 .bag, with a sensor_msgs/msg/NavSatFix topic",
    )
    check.add_argument("--topic", help="NavSatFix topic of a rosbag2 track (default: the first one)")
    check.add_argument("--plot", type=plot_path, metavar="PNG",
                       help="write a map of the fences (and track) to PNG (.png; .svg and .pdf also work)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.add_argument("--default-region", default="base", help="region outside every fence (default: base)")
    add_resolver_options(check)
    check.set_defaults(func=_check)

    imported = actions.add_parser(
        "import",
        help="make a fence file from a boundary file whose areas are named by a property",
        description="Write a fence file (region and priority properties) from FILE, a boundary file such as a "
        "city's neighbourhoods or OpenStreetMap areas, whose Polygon/MultiPolygon features are named by a "
        "property. The result is checked by the loader the nodes use before it is written.",
    )
    imported.add_argument("file", type=Path, help="GeoJSON boundary file (WGS84)")
    imported.add_argument("--out", type=Path, required=True, help="fence file to write (GeoJSON)")
    imported.add_argument("--name-property", default="name", metavar="KEY",
                          help="the property that names the areas (default: name)")
    imported.add_argument("--map", action="append", default=[], metavar="NAME=REGION[:PRIORITY]",
                          help="the areas called NAME become fences of REGION (repeatable); without --map every "
                          "named area becomes a region of its own name")
    imported.add_argument("--priority", type=float, default=0.0,
                          help="priority of fences whose --map gives none (default: 0)")
    imported.add_argument("--default-region", default="base", help="region outside every fence (default: base)")
    imported.add_argument("--repair", action="store_true",
                          help="repair invalid polygons (self-intersecting rings) with shapely.make_valid and write "
                          "the repaired geometry")
    imported.add_argument("--force", action="store_true", help="replace an existing --out file")
    imported.set_defaults(func=_import)


def add_resolver_options(parser: argparse.ArgumentParser) -> None:
    """The region resolver's options, shared by ``geofence check``, ``replay`` and ``demo``."""
    group = parser.add_argument_group("region resolver (default: the resolver's own values)")
    group.add_argument("--enter-margin", type=float, metavar="M", help="metres inside a new region before switching")
    group.add_argument("--exit-margin", type=float, metavar="M",
                       help="metres outside the current region to leave it")
    group.add_argument("--min-dwell", type=float, metavar="S", help="seconds between two switches at least")
    group.add_argument("--confirm", type=float, metavar="S", help="seconds the margins must hold before a switch")
    group.add_argument("--horizon", type=float, metavar="S", help="prefetch horizon in seconds")
    group.add_argument("--repair", action="store_true",
                       help="repair invalid geofence polygons with shapely.make_valid (counted warnings)")
    group.add_argument("--accept-unknown-status", action="store_true",
                       help="use fixes with NavSatStatus STATUS_UNKNOWN (-2, not set by the driver: Jazzy's default, "
                            "the CARLA bridge's fixes); by default they are held, as the message defines")


def resolver_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """ResolverConfig keyword arguments for the resolver options that were given."""
    overrides = {
        "enter_margin_m": getattr(args, "enter_margin", None),
        "exit_margin_m": getattr(args, "exit_margin", None),
        "min_dwell_s": getattr(args, "min_dwell", None),
        "confirm_s": getattr(args, "confirm", None),
        "horizon_s": getattr(args, "horizon", None),
        "accept_unknown_status": True if getattr(args, "accept_unknown_status", False) else None,
    }
    return {k: v for k, v in overrides.items() if v is not None}


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# --------------------------------------------------------------------------------------------------- tracks
def load_track(path: Path, topic: str | None = None) -> list[Any]:
    """Fixes of a CSV or rosbag2 track, in time order; raises DataError naming the file and the problem."""
    from regionadapt_ros.core.errors import DataError
    from regionadapt_ros.core.geo_track import load_track_csv

    if not path.exists():
        raise DataError(path, "track not found")
    ros1 = path.is_file() and _starts_with(path, ROS1_MAGIC)
    if ros1 and path.suffix != ".bag":
        raise DataError(path, "is a ROS 1 bag: name it *.bag to read it as one")
    if path.is_dir() or ros1 or path.suffix.lower() in (".mcap", ".db3", ".bag"):
        return _load_bag_track(path, topic)
    if topic is not None:
        raise DataError(path, "--topic applies to bag tracks only, this is a CSV track")
    if _starts_with(path, MCAP_MAGIC) or _starts_with(path, SQLITE_MAGIC):
        raise DataError(path, "is a rosbag2 storage file: name it *.mcap or *.db3 (or give its bag directory)")
    try:
        return load_track_csv(path)
    except UnicodeDecodeError:
        raise DataError(path, "is not a text CSV track (binary content); a track is a CSV file, a rosbag2 "
                              "(directory, .mcap, .db3) or a ROS 1 .bag") from None


ROS1_MAGIC = b"#ROSBAG V2.0"
MCAP_MAGIC = b"\x89MCAP"
SQLITE_MAGIC = b"SQLite format 3\x00"


def _starts_with(path: Path, magic: bytes) -> bool:
    if not path.is_file():  # a FIFO or device would block the read: the loaders refuse those by name
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def _load_bag_track(path: Path, topic: str | None) -> list[Any]:
    from rosbags.typesys import Stores, get_typestore

    from regionadapt_ros.core.bag_storage import open_bag
    from regionadapt_ros.core.errors import DataError, MessageConversionError
    from regionadapt_ros.core.geo_track import TrackFix
    from regionadapt_ros.core.msgconv.navsat import navsatfix_to_fix

    reader = open_bag(path, get_typestore(Stores.ROS2_HUMBLE), DataError)
    fixes: list[Any] = []
    kind = "ROS 1 bag" if path.suffix == ".bag" else "rosbag2"
    try:
        navsat = [c for c in reader.connections if c.msgtype == NAVSATFIX_MSGTYPE]
        if topic is not None:
            chosen = [c for c in navsat if c.topic == topic]
            if not chosen:
                found = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
                raise DataError(path, f"no {NAVSATFIX_MSGTYPE} topic {topic!r}; the bag has {found}")
        else:
            if not navsat:
                found = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
                raise DataError(path, f"no {NAVSATFIX_MSGTYPE} topic; the bag has {found}")
            chosen = [c for c in navsat if c.topic == navsat[0].topic]
        for connection, log_time_ns, raw in reader.messages(connections=chosen):
            msg = reader.deserialize(raw, connection.msgtype)
            try:
                fix = navsatfix_to_fix(msg)
            except MessageConversionError:
                # A fix with NaN coordinates: the resolver holds the region on it and counts it.
                fix = TrackFix(_stamp_or_log_time(msg, log_time_ns), math.nan, math.nan, int(msg.status.status))
            if fix.stamp_s == 0.0:
                # Unstamped driver output: the recording time is the best clock there is.
                fix = TrackFix(log_time_ns * 1e-9, fix.lat, fix.lon, fix.status, fix.h_std_m)
            fixes.append(fix)
    except DataError:
        raise
    except Exception as exc:  # rosbags raises its own reader/typesys errors for unreadable bags
        raise DataError(path, f"cannot read {kind} track ({type(exc).__name__}: {exc})") from exc
    finally:
        reader.close()
    if not fixes:
        raise DataError(path, f"topic {chosen[0].topic!r} has no messages")
    fixes.sort(key=lambda f: f.stamp_s)
    return fixes


def _stamp_or_log_time(msg: Any, log_time_ns: int) -> float:
    stamp = msg.header.stamp
    value = int(stamp.sec) + int(stamp.nanosec) * 1e-9
    return value if value != 0.0 else log_time_ns * 1e-9


# ------------------------------------------------------------------------------------------------- replay
@dataclass
class TrackReplay:
    """What the resolver did over a track. Times ``t`` are seconds since the first fix."""

    path: str
    fixes: int
    duration_s: float
    start_stamp_s: float
    initial_region: str | None = None
    switches: list[dict[str, Any]] = field(default_factory=list)
    hints: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    positions: list[tuple[float, float]] = field(default_factory=list)  # (lat, lon) of accepted fixes


def replay_track(resolver: Any, fixes: list[Any], path: str) -> TrackReplay:
    """Feed ``fixes`` to ``resolver`` with their stamps as the clock; collect switches and prefetch hints."""
    t0 = fixes[0].stamp_s
    replay = TrackReplay(path=path, fixes=len(fixes), duration_s=fixes[-1].stamp_s - t0, start_stamp_s=t0)
    last_hint: str | None = None
    for fix in fixes:
        state = resolver.update(fix, now_s=fix.stamp_s)
        if state.stamp_s == fix.stamp_s and state.hold_reason not in _quality_reasons():
            replay.positions.append((float(fix.lat), float(fix.lon)))
        if replay.initial_region is None and state.stamp_s is not None:
            replay.initial_region = state.region
        elif state.changed:
            replay.switches.append(
                {
                    "t": round(fix.stamp_s - t0, 3),
                    "stamp_s": fix.stamp_s,
                    "from": state.previous_region,
                    "to": state.region,
                    "lat": float(fix.lat),
                    "lon": float(fix.lon),
                }
            )
        if state.next_region is not None and state.next_region != last_hint:
            replay.hints.append(
                {
                    "t": round(fix.stamp_s - t0, 3),
                    "region": state.next_region,
                    "eta_s": round(state.next_eta_s, 2) if state.next_eta_s is not None else None,
                }
            )
        last_hint = state.next_region
    replay.counters = resolver.counters
    return replay


# A GNSS receiver logs at 1-20 Hz; a median gap this long means a time column in other units (milliseconds,
# nanoseconds), which would stretch every confirmation and dwell by as much.
MAX_MEDIAN_FIX_INTERVAL_S = 10.0


def track_warnings(fixes: list[Any], replay: TrackReplay) -> list[str]:
    """What makes a track's replay meaningless without being an error: time not in seconds, no usable fix."""
    problems = []
    stamps = sorted(float(f.stamp_s) for f in fixes)
    gaps = sorted(b - a for a, b in itertools.pairwise(stamps) if b > a)
    if len(gaps) >= 2 and gaps[len(gaps) // 2] > MAX_MEDIAN_FIX_INTERVAL_S:
        problems.append(f"the median interval between fixes is {gaps[len(gaps) // 2]:g} s: is the time column in "
                        "seconds? (milliseconds or nanoseconds stretch every confirmation and dwell)")
    if replay.initial_region is None:
        held = {k: v for k, v in replay.counters.items() if k not in ("fixes", "accepted", "switches") and v}
        why = ", ".join(f"{k} {v}" for k, v in sorted(held.items())) or "none accepted"
        problems.append(f"no fix of the track was usable ({why}): the resolver never had a region")
    return problems


def _quality_reasons() -> frozenset[Any]:
    from regionadapt_ros.core.region_resolver import QUALITY_REASONS

    return QUALITY_REASONS


# -------------------------------------------------------------------------------------------------- check
def _check(args: argparse.Namespace) -> int:
    from regionadapt_ros.core.diagnostics import CountedWarnings
    from regionadapt_ros.core.geofence import GeofenceSet
    from regionadapt_ros.core.region_resolver import RegionResolver, ResolverConfig

    warnings = CountedWarnings(log=lambda message: print(f"warning: {message}", file=sys.stderr))
    from regionadapt_ros.commands.output_paths import check_file_output

    check_file_output("--plot", args.plot, protected=[args.file, args.track])  # through a link too
    fences = GeofenceSet.load(args.file, args.default_region, repair=args.repair, warnings=warnings)

    config = ResolverConfig(**resolver_overrides(args))
    report = _fences_report(fences, str(args.file), config)

    replay = None
    if args.track is not None:
        fixes = load_track(args.track, args.topic)
        replay = replay_track(RegionResolver(fences, config), fixes, str(args.track))
        report["resolver"] = {k: getattr(config, k) for k in config.__dataclass_fields__}
        report["track"] = {
            "path": replay.path,
            "fixes": replay.fixes,
            "duration_s": round(replay.duration_s, 3),
            "start_stamp_s": replay.start_stamp_s,
            "initial_region": replay.initial_region,
            "counters": replay.counters,
            "hints": replay.hints,
        }
        report["switches"] = replay.switches
        report["track"]["warnings"] = track_warnings(fixes, replay)
    if args.plot is not None:
        plot_geofences(fences, args.plot, replay)
        report["plot"] = str(args.plot)

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0


def _fences_report(fences: Any, file: str, config: Any) -> dict[str, Any]:
    """What ``check`` (and ``import``) say of a fence set: regions, areas, overlaps, regions never entered."""
    from regionadapt_ros.core.region_prediction import NextRegionPredictor

    report: dict[str, Any] = {
        "file": file,
        "default_region": fences.default_region,
        "valid": True,
        "repairs": list(fences.repairs),
        "regions": _regions_report(fences),
        "overlaps": [
            {
                "region_a": o.region_a,
                "region_b": o.region_b,
                "features": [o.feature_a, o.feature_b],
                "area_m2": round(o.area_m2, 1),
                "winner": o.winner,
                "rule": o.rule,
            }
            for o in fences.overlaps()
        ],
        # The default region's fences are carve-outs; they are shadowed like any other when they win nowhere.
        "shadowed_regions": [r for r in fences.regions if fences.fenced_territory(r).is_empty],
    }
    # A fence narrower than twice the enter margin is never switched to (a corridor drawn along one street).
    predictor = NextRegionPredictor(fences, config.enter_margin_m, config.exit_margin_m)
    report["resolver_enter_margin_m"] = config.enter_margin_m
    report["unenterable_regions"] = [r for r in fences.regions if r != fences.default_region
                                     and r not in report["shadowed_regions"] and not predictor.enterable(r)]
    return report


def _import(args: argparse.Namespace) -> int:
    from regionadapt_ros.commands.output_paths import check_file_output
    from regionadapt_ros.core import strict_parse
    from regionadapt_ros.core.bundle.writing import atomic_write_bytes
    from regionadapt_ros.core.diagnostics import CountedWarnings
    from regionadapt_ros.core.errors import ConfigError
    from regionadapt_ros.core.geofence import MAX_GEOJSON_BYTES, GeofenceSet
    from regionadapt_ros.core.geofence_import import (
        MAX_LISTED,
        RegionMapping,
        fence_geometry_json,
        fence_priority,
        fences_from_boundaries,
    )
    from regionadapt_ros.core.region_resolver import ResolverConfig

    mapping = [RegionMapping.parse(text) for text in args.map]
    fence_priority(args.priority, "--priority")
    if args.file.is_dir():
        raise ConfigError(args.file, "is a directory; give the boundary GeoJSON file")
    check_file_output("--out", args.out, protected=[args.file], written_by_rename=True)  # through a link too
    if (args.out.exists() or args.out.is_symlink()) and not args.force:
        raise ConfigError("--out", f"{args.out} exists; pass --force to replace it")
    try:
        data = strict_parse.load_json_file(args.file, max_bytes=MAX_GEOJSON_BYTES)
    except FileNotFoundError:
        raise ConfigError(args.file, "boundary file not found") from None
    result = fences_from_boundaries(data, source=str(args.file), name_property=args.name_property,
                                    mapping=mapping, priority=args.priority)
    warnings = CountedWarnings(log=lambda message: print(f"warning: {message}", file=sys.stderr))
    numbers = [row["index"] for row in result.fences]  # messages name the features as the boundary file has them
    repaired = GeofenceSet.from_geojson(result.document, args.default_region, source=str(args.file),
                                        repair=args.repair, warnings=warnings, feature_numbers=numbers)
    for fence in repaired.fences:  # as the loader read it (and repaired it under --repair), in plain GeoJSON
        result.document["features"][fence.index]["geometry"] = fence_geometry_json(fence.geometry_lonlat)
    text = json.dumps(result.document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # What is written must load as it is, without --repair, on every vehicle: read back as the nodes read it.
    if len(text.encode("utf-8")) > MAX_GEOJSON_BYTES:
        raise ConfigError("--out", f"the fence file would be {len(text.encode('utf-8')):,} bytes, more than a "
                          f"geofence file may hold ({MAX_GEOJSON_BYTES:,}); map fewer areas or simplify them")
    fences = GeofenceSet.from_geojson(strict_parse.loads_json(text, args.out), args.default_region,
                                      source=str(args.out))
    try:
        target = args.out.resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(args.out, f"cannot write the fence file ({exc})") from None
    report = _fences_report(fences, str(args.out), ResolverConfig())
    report["repairs"] = list(repaired.repairs)
    _print_text(report)
    skipped = {"unnamed": f"without a {args.name_property!r} property",
               "name_not_text": f"whose {args.name_property!r} is not a string or a whole number",
               "unmapped": "not mapped by --map", "not_polygonal": "without a Polygon or MultiPolygon geometry"}
    for reason, count in sorted(result.skipped.items()):
        print(f"  left out: {count} feature(s) {skipped[reason]}")
    regions = [r for r in fences.regions if r != fences.default_region]
    if fences.default_region in fences.regions:
        print(f"  the fences of {fences.default_region!r} are carve-outs: the default region inside other regions' "
              "fences")
    needs = ", ".join(repr(r) for r in regions[:MAX_LISTED]) or "none (every fence is of the default region)"
    if len(regions) > MAX_LISTED:
        needs += f" and {len(regions) - MAX_LISTED} more (the table lists them)"
    print(f"written: {args.out}; regions.yaml needs a bundle for each of: {needs}")
    return 0


def _regions_report(fences: Any) -> list[dict[str, Any]]:
    rows = []
    for region in fences.regions:
        members = fences.fences_of(region)
        priorities = sorted({f.priority for f in members})
        top = priorities[-1]
        rows.append(
            {
                "region": region,
                "priority": int(top) if float(top).is_integer() else top,
                "area_km2": round(fences.region_area_m2(region) / 1e6, 4),
                "features": len(members),
                "feature_indices": [f.index for f in members],
            }
        )
    return rows


def _print_text(report: dict[str, Any]) -> None:
    regions = report["regions"]
    features = sum(r["features"] for r in regions)
    print(
        f"geofences: {report['file']}: {features} feature(s), {len(regions)} region(s), "
        f"default region {report['default_region']!r}"
    )
    for message in report["repairs"]:
        print(f"  repaired: {message}")
    width = max(len("region"), *(len(r["region"]) for r in regions))
    print(f"  {'region':<{width}}  priority  area km²  features")
    for r in regions:
        print(f"  {r['region']:<{width}}  {r['priority']:>8}  {r['area_km2']:>8.3f}  {r['features']:>8}")
    if report["overlaps"]:
        print("overlaps (higher priority wins, then the smaller fence):")
        for o in report["overlaps"]:
            print(
                f"  {o['region_a']} / {o['region_b']} (features {o['features'][0]}, {o['features'][1]}): "
                f"{o['area_m2']:.0f} m² -> {o['winner']} ({o['rule']})"
            )
    else:
        print("overlaps: none")
    for region in report["shadowed_regions"]:
        print(f"warning: region {region!r} wins nowhere: higher-priority fences cover all of it")
    for region in report.get("unenterable_regions", []):
        print(f"warning: region {region!r} is never entered: no point of it lies the enter margin "
              f"({report['resolver_enter_margin_m']:g} m) inside it")
    track = report.get("track")
    if track is not None:
        print(f"track: {track['path']}: {track['fixes']} fixes over {track['duration_s']:.1f} s")
        if track["initial_region"] is not None:
            print(f"  t=0.000 s: start in {track['initial_region']}")
        events = [
            (s["t"], f"switch {s['from']} -> {s['to']} at {s['lat']:.6f}, {s['lon']:.6f}") for s in report["switches"]
        ]
        events += [(h["t"], f"prefetch hint: {h['region']} in {h['eta_s']} s") for h in track["hints"]]
        for t, text in sorted(events, key=lambda e: e[0]):
            print(f"  t={t:.3f} s: {text}")
        print(f"  switches: {len(report['switches'])}")
        held = {k: v for k, v in track["counters"].items() if k not in ("fixes", "accepted", "switches")}
        if held:
            print("  fixes held: " + ", ".join(f"{k} {v}" for k, v in sorted(held.items())))
        if track["counters"].get("unknown_status"):
            print(f"warning: {track['counters']['unknown_status']} fixes had status -2 (STATUS_UNKNOWN: the driver "
                  "does not set it) and were not used; pass --accept-unknown-status if its positions are good")
    for message in (track or {}).get("warnings", []):
        print(f"warning: {message}")
    if "plot" in report:
        print(f"plot: {report['plot']}")


# --------------------------------------------------------------------------------------------------- plot
def plot_geofences(fences: Any, path: Path, replay: TrackReplay | None = None) -> None:
    """Map of the fences in lon/lat (equal-aspect at the set's latitude); with a replay, the track and its
    switch points, plus a panel zoomed on the track. Written as PNG to ``path``."""
    from regionadapt_ros.core.plotting import pyplot

    plt = pyplot()
    from matplotlib.patches import Patch

    from regionadapt_ros.core.errors import DataError

    regions = fences.regions
    # Qualitative palettes only: neighbouring regions must not look alike. 10, then 20, then 60 colours.
    if len(regions) <= 10:
        palette = list(plt.get_cmap("tab10").colors)
    elif len(regions) <= 20:
        palette = list(plt.get_cmap("tab20").colors)
    else:
        palette = [c for name in ("tab20", "tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    colours = {region: palette[i % len(palette)] for i, region in enumerate(regions)}
    aspect = 1.0 / math.cos(math.radians(fences.projection.lat0_deg))

    panels = 2 if replay is not None and replay.positions else 1
    fig, axes = plt.subplots(1, panels, figsize=(8 * panels, 8), squeeze=False)
    for ax in axes[0]:
        _draw_fences(ax, fences, colours)
        ax.set_aspect(aspect)
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
        ax.grid(True, linewidth=0.3, alpha=0.5)
        ax.ticklabel_format(useOffset=False)
    axes[0][0].set_title(f"{Path(fences.source).name} (default region: {fences.default_region})")
    if panels == 2:
        assert replay is not None
        for ax in axes[0]:
            _draw_track(ax, replay)
        lats = [p[0] for p in replay.positions]
        lons = [p[1] for p in replay.positions]
        # A square window (in metres) around the track with a margin, so a straight drive is not a sliver.
        half_lat = max(0.001, (max(lats) - min(lats)) / 2, (max(lons) - min(lons)) / 2 / aspect) * 1.3
        mid_lat, mid_lon = (max(lats) + min(lats)) / 2, (max(lons) + min(lons)) / 2
        zoom = axes[0][1]
        zoom.set_xlim(mid_lon - half_lat * aspect, mid_lon + half_lat * aspect)
        zoom.set_ylim(mid_lat - half_lat, mid_lat + half_lat)
        zoom.set_title(f"track {Path(replay.path).name}: {len(replay.switches)} switch(es)")
        for s in replay.switches:
            zoom.annotate(
                f"t={s['t']:.1f} s\n{s['from']} → {s['to']}",
                (s["lon"], s["lat"]),
                xytext=(12, -4),
                textcoords="offset points",
                fontsize=8,
                bbox={"boxstyle": "round", "fc": "white", "alpha": 0.85},
            )
    handles = [Patch(facecolor=colours[r], edgecolor="black", alpha=0.5, label=r) for r in regions]
    fig.tight_layout()
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(handles), 6),
        fontsize=8,
        frameon=False,
    )
    try:
        # "tight" grows the canvas to whatever the legend needs, so nothing is clipped however many regions.
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise DataError(path, f"cannot write plot ({exc})") from exc
    finally:
        plt.close(fig)


def _draw_fences(ax: Any, fences: Any, colours: dict[str, Any]) -> None:
    import shapely
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath
    from shapely.geometry.polygon import orient

    # Draw low priority first so that the winners are on top, as the resolution rule reads.
    for fence in sorted(fences.fences, key=lambda f: (f.priority, -f.area_m2), reverse=False):
        for polygon in shapely.get_parts(fence.geometry_lonlat):
            # Exterior counter-clockwise, holes clockwise: matplotlib's nonzero fill leaves the holes empty.
            polygon = orient(polygon, 1.0)
            rings = [polygon.exterior, *polygon.interiors]
            path = MplPath.make_compound_path(*(MplPath(list(ring.coords), closed=True) for ring in rings))
            ax.add_patch(PathPatch(path, facecolor=colours[fence.region], edgecolor="black", alpha=0.45, linewidth=0.6))
    ax.autoscale_view()


def _draw_track(ax: Any, replay: TrackReplay) -> None:
    lats = [p[0] for p in replay.positions]
    lons = [p[1] for p in replay.positions]
    ax.plot(lons, lats, color="black", linewidth=1.2, label="track")
    ax.plot(lons[0], lats[0], marker="o", color="green", markersize=6)
    for s in replay.switches:
        ax.plot(s["lon"], s["lat"], marker="X", color="red", markersize=10, markeredgecolor="white")
