"""The replay report: an HTML page with PNG plots of one run.

- ``route.png``: the GNSS route over the geofences, coloured by the region being served, with swap points;
- ``commands.png``: steering, acceleration and speed over bag time (seconds since the bag's start), region
  bands, stop commands, emergency-brake overrides and camera-only frames marked, a marker per frame when there
  are few;
- ``risk.png``: time to collision and obstacle distance over bag time with the thresholds in force, frames at
  warn / brake level shaded, emergency-brake overrides marked; a table of the brake episodes with their reasons;
- ``latency.png``: latency histogram per pipeline stage;
- a per-region table: frames, swaps into the region, missed frames, latency p50/p99.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regionadapt_ros.core.plotting import save_figure


@dataclass
class FrameRecord:
    t: float
    region: str
    bundle_id: str
    steering: float
    accel: float
    target_speed: float
    speed: float
    stop: bool
    latency_ms: dict[str, float]
    missed: bool = False
    ttc_s: float | None = None          # collision risk of the frame (None: unknown; inf: not closing)
    distance_m: float | None = None     # filtered obstacle distance (None: no track)
    risk_level: int = 0                 # 0 none, 1 warn, 2 brake
    emergency_brake: bool = False       # the command was overridden by the emergency-braking guard
    ttc_warn_s: float | None = None     # thresholds in force for the frame
    ttc_brake_s: float | None = None
    lidar_used: bool = True             # a sweep served the frame (False: camera-only)


@dataclass
class ReplayLog:
    """What a replay did; every ``t`` is seconds since the bag's first message."""

    frames: list[FrameRecord] = field(default_factory=list)
    stops: list[tuple[float, str]] = field(default_factory=list)         # (t, reason) of watchdog stops
    track: list[tuple[float, float, float, str]] = field(default_factory=list)  # (t, lat, lon, active region)
    swaps: list[dict[str, Any]] = field(default_factory=list)             # t, from, to, lat, lon, timings
    warnings: dict[str, int] = field(default_factory=dict)
    region_switches: list[dict[str, Any]] = field(default_factory=list)   # t, from, to, frames_served, lat, lon
    failed_loads: list[dict[str, Any]] = field(default_factory=list)      # t, region, reason
    camera_only: list[tuple[float, str]] = field(default_factory=list)    # (t, why no sweep served the frame)
    has_gnss: bool = True
    brake_episodes: list[dict[str, Any]] = field(default_factory=list)   # EmergencyBrakeGuard episodes


def _colours(regions: Sequence[str]) -> dict[str, str]:
    palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
    return {r: palette[i % len(palette)] for i, r in enumerate(regions)}


def per_region_summary(log: ReplayLog) -> list[dict[str, Any]]:
    order = list(dict.fromkeys(f.region for f in log.frames))
    rows = []
    for region in order:
        fr = [f for f in log.frames if f.region == region]
        lat = np.array([f.latency_ms.get("total", math.nan) for f in fr], dtype=float)
        lat = lat[np.isfinite(lat)]
        rows.append({
            "region": region,
            "frames": len(fr),
            "swaps_in": sum(1 for s in log.swaps if s.get("to") == region),
            "missed": sum(1 for f in fr if f.missed),
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else math.nan,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else math.nan,
        })
    return rows


def _ms(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if math.isfinite(v) else "–"
    return str(v)


def commands_figure(log: ReplayLog, colour: dict[str, str] | None = None) -> Any:
    """Steering, acceleration and speed over the seconds since the bag's start (a matplotlib Figure): region
    bands, swaps dotted, stop commands and camera-only frames marked, and a marker per frame when there are
    fewer than 60 (a line through a handful of points hides them)."""
    from regionadapt_ros.core.plotting import pyplot

    plt = pyplot()

    colour = colour or _colours(list(dict.fromkeys(f.region for f in log.frames)))
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.5), sharex=True)
    if log.frames:
        t = np.array([f.t for f in log.frames])  # seconds since the bag's start
        series = [("steering [rad]", [f.steering for f in log.frames]),
                  ("accel [m/s²]", [f.accel for f in log.frames]),
                  ("speed [m/s]", [f.speed for f in log.frames])]
        few = len(log.frames) < 60  # a line through a handful of points hides them: mark each one
        for ax, (label, values) in zip(axes, series, strict=True):
            ax.plot(t, values, lw=1.0, color="#333333", marker="o" if few else None, ms=4)
            ax.set_ylabel(label, fontsize=8)
            start = 0
            for i in range(1, len(log.frames) + 1):
                if i == len(log.frames) or log.frames[i].region != log.frames[start].region:
                    ax.axvspan(t[start], t[i - 1], color=colour.get(log.frames[start].region, "#ccc"), alpha=0.15)
                    start = i
        axes[2].plot(t, [f.target_speed for f in log.frames], lw=0.8, ls="--", color="#2b7bba", label="target",
                     marker="o" if few else None, ms=3)
        camera_only = [f.t for f in log.frames if not f.lidar_used]
        if camera_only and len(camera_only) == len(log.frames):
            axes[0].text(0.01, 0.95, "every frame ran camera-only (no lidar)", transform=axes[0].transAxes,
                         fontsize=8, va="top", color="#b06f00")
        elif camera_only:
            axes[0].scatter(camera_only, [f.steering for f in log.frames if not f.lidar_used], color="#e69f00",
                            marker="s", s=16, zorder=3, label="camera-only frame")
            axes[0].legend(fontsize=7)
    stops = [ts for ts, _ in log.stops]
    if stops:
        axes[1].scatter(stops, [0.0] * len(stops), color="red", marker="x", s=12, label="stop command")
        axes[1].legend(fontsize=7)
    braked = [(f.t, f.accel) for f in log.frames if f.emergency_brake]
    if braked:
        axes[1].scatter(*zip(*braked, strict=True), color="#b2182b", marker="v", s=14,
                        label="emergency brake override")
        axes[1].legend(fontsize=7)
    for s in log.swaps:
        for ax in axes:
            ax.axvline(s["t"], color="black", lw=0.6, ls=":")
    if not log.frames:
        axes[0].text(0.5, 0.5, "no frame produced a command", transform=axes[0].transAxes, ha="center")
    axes[-1].set_xlabel("seconds since the bag's start")
    axes[0].set_title("commands over time (bands = region served, dotted = swap)", fontsize=9)
    fig.tight_layout()
    return fig


def write_report(log: ReplayLog, out_dir: str | Path, title: str, geofences: Any | None = None,
                 summary: dict[str, Any] | None = None) -> Path:
    """Write index.html and its PNGs into ``out_dir``; returns the HTML path."""
    from regionadapt_ros.core.plotting import pyplot

    plt = pyplot()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    regions = list(dict.fromkeys([f.region for f in log.frames] + [t[3] for t in log.track]))
    if geofences is not None:
        regions += [r for r in getattr(geofences, "regions", []) if r not in regions]
    colour = _colours(regions)

    # route over geofences
    fig, ax = plt.subplots(figsize=(7, 6))
    if geofences is not None:
        for feat in getattr(geofences, "fences", []):
            geom = feat.geometry_lonlat
            polys = getattr(geom, "geoms", [geom])
            for p in polys:
                x, y = p.exterior.xy
                ax.fill(x, y, alpha=0.15, color=colour.get(feat.region, "#999999"))
                ax.plot(x, y, color=colour.get(feat.region, "#999999"), lw=0.8)
    if not log.track:
        why = "no GNSS in this bag" if not log.has_gnss else "no usable GNSS fix in this bag"
        ax.text(0.5, 0.5, f"{why}:\nthe route cannot be drawn", transform=ax.transAxes, ha="center",
                va="center", fontsize=12, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.9})
    if log.track:
        tr = np.array([(lon, lat) for _, lat, lon, _ in log.track])
        regs = [r for *_, r in log.track]
        for r in dict.fromkeys(regs):
            m = np.array([x == r for x in regs])
            ax.scatter(tr[m, 0], tr[m, 1], s=4, color=colour.get(r, "#000000"), label=f"served: {r}")
        lat0 = float(np.mean(tr[:, 1]))
        ax.set_aspect(1.0 / max(0.1, math.cos(math.radians(lat0))))
    for s in log.swaps:
        if s.get("lat") is not None:
            ax.plot(s["lon"], s["lat"], marker="*", color="black", ms=12)
            ax.annotate(f"→ {s['to']}", (s["lon"], s["lat"]), fontsize=8, xytext=(4, 4),
                        textcoords="offset points")
    for s in log.region_switches:
        if s.get("lat") is not None and s.get("lon") is not None:
            ax.plot(s["lon"], s["lat"], marker="D", color="#444444", ms=6, mfc="none")
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title("route over the geofences (◇ = region switch, ★ = first frame on the new weights)", fontsize=9)
    if log.track:
        ax.legend(fontsize=7, loc="best", markerscale=3)
    fig.tight_layout()
    save_figure(fig, out / "route.png")

    # commands over time
    fig = commands_figure(log, colour)
    save_figure(fig, out / "commands.png")

    _plot_risk(plt, log, out / "risk.png")

    # latency histogram per stage
    stages = [s for s in ("convert", "preprocess", "perception", "decision", "control", "total")
              if any(s in f.latency_ms for f in log.frames)]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(2.6 * max(1, len(stages)), 2.8), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=False):
        v = np.array([f.latency_ms[stage] for f in log.frames if stage in f.latency_ms])
        ax.hist(v, bins=40, color="#2b7bba")
        ax.set_title(f"{stage}\np50 {np.percentile(v, 50):.2f} / p99 {np.percentile(v, 99):.2f} ms", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_figure(fig, out / "latency.png")

    t_first = 0.0  # every time in the log is already seconds since the bag's start
    rows = per_region_summary(log)
    table = "".join(
        f"<tr><td>{html.escape(r['region'])}</td><td>{r['frames']}</td><td>{r['swaps_in']}</td>"
        f"<td>{r['missed']}</td><td>{r['latency_ms_p50']:.2f}</td><td>{r['latency_ms_p99']:.2f}</td></tr>"
        for r in rows)
    swaps = "".join(
        f"<tr><td>{s['t']:.2f}</td><td>{html.escape(str(s.get('from')))}</td><td>{html.escape(str(s['to']))}</td>"
        f"<td>{html.escape(str(s.get('bundle_id', '')))}</td>"
        f"<td>{_ms(s.get('request_to_first_frame_ms'))}</td>"
        f"<td>{'yes' if s.get('prefetched') else 'no'}</td></tr>" for s in log.swaps)
    switches = "".join(
        f"<tr><td>{s['t']:.2f}</td><td>{html.escape(str(s.get('from')))}</td><td>{html.escape(str(s['to']))}</td>"
        f"<td>{s.get('frames_served', 0)}</td></tr>" for s in log.region_switches)
    failed = "".join(
        f"<tr><td>{f['t']:.2f}</td><td>{html.escape(f['region'])}</td><td style='text-align:left'>"
        f"{html.escape(f['reason'])}</td></tr>" for f in log.failed_loads) or "<tr><td colspan=3>none</td></tr>"
    reasons: dict[str, int] = {}
    for _, why in log.camera_only:
        reasons[why] = reasons.get(why, 0) + 1
    camera_only = "".join(f"<li>{n} × {html.escape(why)}</li>" for why, n in sorted(reasons.items()))
    camera_only = f"<ul>{camera_only}</ul>" if camera_only else "<p>none: every frame had a lidar sweep</p>"
    no_route = ""
    if not log.track:
        why = "no GNSS in this bag" if not log.has_gnss else "no usable GNSS fix in this bag"
        no_route = f"<p><b>{why}</b>: the route cannot be drawn, and the default region served throughout.</p>"
    episodes = "".join(
        f"<tr><td>{e['start_s'] - t_first:.2f}</td><td>{_opt(e.get('end_s'), t_first)}</td>"
        f"<td>{html.escape(str(e.get('region', '')))}</td><td>{e.get('frames', 0)}</td>"
        f"<td>{'override' if e.get('applied') else 'recorded (guard off)'}</td>"
        f"<td>{_opt(e.get('min_ttc_s'))}</td><td style='text-align:left'>{html.escape(str(e.get('reason', '')))}</td>"
        f"</tr>" for e in log.brake_episodes)
    summary_html = ""
    if summary:
        summary_html = "<ul>" + "".join(
            f"<li><b>{html.escape(str(k))}</b>: {html.escape(_fmt_value(v))}</li>" for k, v in summary.items()
            if v is not None and not isinstance(v, (list, dict))) + "</ul>"
        notes = summary.get("notes") or []
        if notes:
            summary_html += "<p>" + "<br>".join(html.escape(str(n)) for n in notes) + "</p>"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>{html.escape(title)}</h1><p>Times are seconds since the bag's first message.</p>{summary_html}
<h2>Route and swaps</h2>{no_route}<img src="route.png" alt="route over geofences">
<h2>Per region</h2><table><tr><th>region</th><th>frames</th><th>swaps in</th><th>missed frames</th>
<th>latency p50 [ms]</th><th>latency p99 [ms]</th></tr>{table}</table>
<h2>Region switches (GNSS → active region)</h2><table><tr><th>t [s]</th><th>from</th><th>to</th>
<th>frames served in it</th></tr>{switches}</table>
<h2>Swaps (weights served)</h2><table><tr><th>t [s]</th><th>from</th><th>to</th><th>bundle</th>
<th>active_region → first frame [ms]</th><th>prefetched</th></tr>{swaps}</table>
<h2>Failed loads</h2><table><tr><th>t [s]</th><th>region</th><th>reason</th></tr>{failed}</table>
<h2>Frames without lidar</h2>{camera_only}
<h2>Commands</h2><img src="commands.png" alt="commands over time">
<h2>Collision risk</h2><img src="risk.png" alt="time to collision over time">
<h3>Emergency-brake episodes</h3><table><tr><th>start [s]</th><th>end [s]</th><th>region</th><th>frames</th>
<th>action</th><th>lowest TTC [s]</th><th>reason</th></tr>{episodes}</table>
<h2>Latency per stage</h2><img src="latency.png" alt="latency histograms">
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path


def _opt(value: float | None, offset: float = 0.0) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value - offset:.2f}"


TTC_PLOT_MAX_S = 10.0


def _plot_risk(plt: Any, log: ReplayLog, path: Path) -> None:
    """TTC (clipped to TTC_PLOT_MAX_S; gaps where unknown) and distance over bag time; warn / brake frames shaded,
    overrides marked."""
    fig, axes = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True)
    if log.frames:
        t = np.array([f.t for f in log.frames])  # seconds since the bag's start
        ttc = np.array([np.nan if f.ttc_s is None else min(f.ttc_s, TTC_PLOT_MAX_S) for f in log.frames])
        dist = np.array([np.nan if f.distance_m is None else f.distance_m for f in log.frames])
        axes[0].plot(t, ttc, lw=1.0, color="#333333", label="TTC")
        for name, colour in (("ttc_warn_s", "#e6ab02"), ("ttc_brake_s", "#b2182b")):
            values = np.array([np.nan if getattr(f, name) is None else getattr(f, name) for f in log.frames])
            if np.isfinite(values).any():
                axes[0].step(t, values, where="post", lw=0.8, ls="--", color=colour, label=name)
        axes[1].plot(t, dist, lw=1.0, color="#2b7bba")
        period = float(np.median(np.diff(t))) if t.size > 1 else 0.1
        for level, colour in ((1, "#fee08b"), (2, "#f4a582")):
            for ax in axes:
                for x in t[[f.risk_level == level for f in log.frames]]:
                    ax.axvspan(x - period / 2, x + period / 2, color=colour, alpha=0.6, lw=0)
        braked = t[[f.emergency_brake for f in log.frames]]
        if braked.size:
            axes[0].scatter(braked, np.full(braked.size, TTC_PLOT_MAX_S), color="#b2182b", marker="v", s=14,
                            label="emergency brake override", zorder=3)
        axes[0].legend(fontsize=7, loc="lower right")
    axes[0].set_ylim(0, TTC_PLOT_MAX_S * 1.05)
    axes[0].set_ylabel(f"TTC [s] (≤ {TTC_PLOT_MAX_S:g})", fontsize=8)
    axes[1].set_ylabel("obstacle [m]", fontsize=8)
    axes[-1].set_xlabel("seconds since the bag's start")
    axes[0].set_title("collision risk (yellow = warn, red = brake level, ▼ = override)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
