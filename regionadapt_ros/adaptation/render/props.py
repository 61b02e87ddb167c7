"""The upright things in the camera (buildings, rock walls, guardrails, vehicles, poles, traffic lights, street
lamps) and the night lighting drawn over them."""

from __future__ import annotations

import math

import cv2
import numpy as np

from regionadapt_ros.adaptation.regions import RGB
from regionadapt_ros.adaptation.render.common import (
    _NEAR_M,
    _ONE,
    _RED_LAMP,
    _SHIFT,
    _TL_HOUSING_M,
    _TL_MIN_SHORT_PX,
    _Z_GROUND,
    Camera,
    DrawnBox,
    _Canvas,
    _Emissive,
    _fixed,
    _hash01,
    _headlight_gain,
    _noise_bank,
    _shade,
)
from regionadapt_ros.adaptation.render.ground import _CAM_STATIONS
from regionadapt_ros.adaptation.scene import (
    TL_GREEN,
    TL_RED,
    TL_YELLOW,
    Facade,
    RoadGeometry,
    Scene,
    Vehicle,
)

# Upright primitives are (depth, draw function) pairs sorted far to near.


def _vertical_quads(
    geom: RoadGeometry, s_a: np.ndarray, s_b: np.ndarray, lat: float, z_lo: float, z_hi: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, 4) x, y, z of vertical quads standing on the road-frame line at ``lat`` between s_a and s_b."""
    s = np.stack((s_a, s_b, s_b, s_a), axis=1)
    x, y = geom.points(s, lat)
    z_hi = np.broadcast_to(np.asarray(z_hi, dtype=np.float64).reshape(-1, 1), (s.shape[0], 1))[:, 0]
    z = np.stack((np.full_like(s_a, z_lo), np.full_like(s_a, z_lo), z_hi, z_hi), axis=1)
    return x, y, z


def _facade_segments(facades: list[Facade], s_lo: float, s_hi: float) -> dict[str, np.ndarray]:
    """Facades cut into segments at fixed offsets from their start (so the cuts, rock-wall outline and shading
    stay put as the ego moves), clipped to [s_lo, s_hi]. Returns arrays per segment: fid, sa, sb, lat, ha, hb
    (heights at both ends), shade."""
    f_s0 = np.array([f.s0 for f in facades])
    f_s1 = np.array([f.s1 for f in facades])
    rock = np.array([f.kind == "rock_wall" for f in facades])
    step = np.where(rock, 3.0, 8.0)
    n = np.maximum(np.ceil((f_s1 - f_s0) / step).astype(np.int64), 1)
    fid = np.repeat(np.arange(len(facades)), n)
    j = np.arange(fid.size) - np.repeat(np.cumsum(n) - n, n)
    sa = f_s0[fid] + j * step[fid]
    sb = np.minimum(sa + step[fid], f_s1[fid])
    keep = (sb > s_lo) & (sa < s_hi)
    fid, j, sa, sb = fid[keep], j[keep], np.maximum(sa[keep], s_lo), np.minimum(sb[keep], s_hi)
    seeds = np.array([f.seed for f in facades], dtype=np.int64)[fid]
    height = np.array([f.height for f in facades])[fid]
    is_rock = rock[fid]
    ha = np.where(is_rock, height * (0.65 + 0.35 * _hash01(seeds, j)), height)
    hb = np.where(is_rock, height * (0.65 + 0.35 * _hash01(seeds, j + 1)), height)
    shade = np.where(is_rock, 0.8 + 0.3 * _hash01(seeds + 17, j), 1.0)
    lat = np.array([f.lat for f in facades])[fid]
    return {"fid": fid, "sa": sa, "sb": sb, "lat": lat, "ha": ha, "hb": hb, "shade": shade}


def _facade_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    s_hi = min(160.0, geom.scenery_range[1])
    facades = [f for f in scene.facades if f.s1 > 0.5 and f.s0 < s_hi]
    if not facades:
        return
    seg = _facade_segments(facades, 0.5, s_hi)
    if seg["fid"].size == 0:
        return
    sa, sb, lat = seg["sa"], seg["sb"], seg["lat"]
    x, y = geom.points(np.stack((sa, sb, sb, sa), axis=1), lat[:, None])
    z = _Z_GROUND + np.stack((np.zeros_like(sa), np.zeros_like(sa), seg["hb"], seg["ha"]), axis=1)
    u, v, d = cam.project(x, y, z)
    ok = (d > _NEAR_M).all(axis=1)
    fid, shade = seg["fid"][ok], seg["shade"][ok]
    u, v, d = u[ok], v[ok], d[ok]
    pts = _fixed(u, v)
    # Near end walls of blocks that start ahead of the camera.
    ends = [i for i, f in enumerate(facades) if f.s0 > 0.5]
    end_pts: dict[int, np.ndarray] = {}
    if ends:
        es = np.array([facades[i].s0 for i in ends])[:, None].repeat(4, axis=1)
        el = np.array([[facades[i].lat, facades[i].lat + facades[i].depth] for i in ends])
        elat = np.stack((el[:, 0], el[:, 1], el[:, 1], el[:, 0]), axis=1)
        eh = np.array([facades[i].height if facades[i].kind == "building" else 0.65 * facades[i].height for i in ends])
        ez = _Z_GROUND + np.stack((np.zeros_like(eh), np.zeros_like(eh), eh, eh), axis=1)
        ex, ey = geom.points(es, elat)
        eu, ev, ed = cam.project(ex, ey, ez)
        efix = _fixed(eu, ev)
        for k, i in enumerate(ends):
            if (ed[k] > _NEAR_M).all():
                end_pts[i] = efix[k]
    # Windows of buildings: 1.5 m x 1.7 m, on floors 3.2 m apart, every 3 m along the face.
    win_pts: dict[int, list] = {}
    lit: dict[int, list[_Emissive]] = {}
    bld = [i for i, f in enumerate(facades) if f.kind == "building"]
    if bld:
        nf = np.array([max(int((facades[i].height - 2.0) // 3.2), 0) for i in bld])
        nc = np.array([max(int((facades[i].s1 - facades[i].s0 - 2.5) // 3.0), 0) for i in bld])
        cnt = nf * nc
        if cnt.sum() > 0:
            wf = np.repeat(np.arange(len(bld)), cnt)
            k = np.arange(wf.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            floor_i, col_i = k // nc[wf], k % nc[wf]
            fac_idx = np.array(bld)[wf]
            ws0 = np.array([facades[i].s0 for i in bld])[wf] + 1.0 + 3.0 * col_i
            keep = (ws0 > 0.5) & (ws0 < 70.0)
            wf, k, floor_i, fac_idx, ws0 = wf[keep], k[keep], floor_i[keep], fac_idx[keep], ws0[keep]
            if ws0.size:
                wlat = np.array([facades[i].lat - math.copysign(0.05, facades[i].lat) for i in bld])[wf]
                wz0 = _Z_GROUND + 1.0 + 3.2 * floor_i
                wx, wy = geom.points(np.stack((ws0, ws0 + 1.5, ws0 + 1.5, ws0), 1), wlat[:, None])
                wu, wv, wd = cam.project(wx, wy, np.stack((wz0, wz0, wz0 + 1.7, wz0 + 1.7), 1))
                okw = (wd > _NEAR_M).all(axis=1)
                wfix = _fixed(wu[okw], wv[okw])
                fac_ok = fac_idx[okw]
                wb = np.searchsorted(fac_ok, np.arange(len(facades) + 1))
                for i in np.unique(fac_ok):
                    win_pts[int(i)] = list(wfix[wb[i] : wb[i + 1]])
                if canvas.night:
                    seeds = np.array([facades[i].seed for i in bld], dtype=np.int64)[wf]
                    on = okw & (_hash01(seeds, k) < 0.2)
                    for m in np.nonzero(on)[0]:
                        dd = float(wd[m].mean())
                        lit.setdefault(int(fac_idx[m]), []).append(
                            _Emissive(
                                float(wu[m].mean()), float(wv[m].mean()), 0.45 * cam.f / dd, (255, 205, 130), 0.0, dd
                            )
                        )
    bounds = np.searchsorted(fid, np.arange(len(facades) + 1))
    for i, fac in enumerate(facades):
        a, b = bounds[i], bounds[i + 1]
        if a == b:
            continue
        depth = float(d[a:b].mean())
        box = (float(u[a:b].min()), float(v[a:b].min()), float(u[a:b].max()), float(v[a:b].max()), depth)
        if fac.kind == "rock_wall":
            levels = np.digitize(shade[a:b], (0.9, 1.0))
            groups = [(list(pts[a:b][levels == q]), _shade(fac.colour, (0.85, 0.95, 1.05)[q])) for q in range(3)]
        else:
            groups = [(list(pts[a:b]), fac.colour)]

        end, windows, lamps = end_pts.get(i), win_pts.get(i), lit.get(i)

        def draw(groups=groups, end=end, windows=windows, colour=fac.colour, lamps=lamps, box=box) -> None:
            if end is not None:
                cv2.fillConvexPoly(canvas.img, end, _shade(colour, 0.7), cv2.LINE_8, _SHIFT)
            for quads, c in groups:
                if quads:
                    cv2.fillPoly(canvas.img, quads, c, cv2.LINE_8, _SHIFT)
            if windows:
                cv2.fillPoly(canvas.img, windows, _shade(colour, 0.45), cv2.LINE_8, _SHIFT)
            if lamps:
                canvas.emissive.extend(lamps)
            canvas.occluders.append(box)

        prims.append((depth, draw))


def _guardrail_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    s_hi = geom.scenery_range[1]
    for rail in scene.guardrails:
        st = _CAM_STATIONS[(max(rail.s0, 0.3) <= _CAM_STATIONS) & (min(rail.s1, s_hi) >= _CAM_STATIONS)]
        if st.size < 2:
            continue
        x, y, z = _vertical_quads(geom, st[:-1], st[1:], rail.lat, _Z_GROUND + 0.45, _Z_GROUND + 0.8)
        u, v, d = cam.project(x, y, z)
        ok = (d > _NEAR_M).all(axis=1)
        u, v, d = u[ok], v[ok], d[ok]
        # Posts every few metres below the rail.
        xp, yp, zp = _vertical_quads(geom, st[:-1], st[:-1] + 0.15, rail.lat, _Z_GROUND, _Z_GROUND + 0.45)
        up, vp, dp = cam.project(xp, yp, zp)
        okp = (dp > _NEAR_M).all(axis=1)
        up, vp, dp = up[okp], vp[okp], dp[okp]
        chunk = 6
        for i in range(0, u.shape[0], chunk):
            ru, rv, rd = u[i : i + chunk], v[i : i + chunk], d[i : i + chunk]
            quads = list(_fixed(ru, rv))
            sel = (dp.mean(1) >= rd.min()) & (dp.mean(1) <= rd.max())
            posts = list(_fixed(up[sel], vp[sel]))

            def draw(quads=quads, posts=posts) -> None:
                if posts:
                    cv2.fillPoly(canvas.img, posts, (90, 90, 92), cv2.LINE_8, _SHIFT)
                cv2.fillPoly(canvas.img, quads, (175, 178, 182), cv2.LINE_AA, _SHIFT)

            prims.append((float(rd.mean()), draw))


# Box corners: bottom rear-right, rear-left, front-left, front-right, then the same on top (vehicle's own frame:
# x forward, y left). Faces as corner indices with the face's name.
_CORNER_X = np.array([-1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0])


_CORNER_Y = np.array([-1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, -1.0])


_CORNER_Z = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])


_BOX_FACES = (
    ((0, 1, 5, 4), "rear"),
    ((2, 3, 7, 6), "front"),
    ((1, 2, 6, 5), "left"),
    ((3, 0, 4, 7), "right"),
    ((4, 5, 6, 7), "top"),
)


_BOX_FACE_IDX = np.array([idx for idx, _ in _BOX_FACES])


_FACE_SHADE = {"rear": 1.0, "front": 1.0, "left": 0.72, "right": 0.72, "top": 1.15}


# End-face details (lateral as a fraction of the half width): rear / front window, left and right lamps.
_WINDOW_Y = np.array([-0.85, 0.85, 0.85, -0.85])


_LAMP_Y = np.array([-0.98, -0.7, -0.7, -0.98, 0.7, 0.98, 0.98, 0.7])


def _vehicle_points(geom: RoadGeometry, vehicles: list[Vehicle]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, 20) vehicle-frame x, y, z per box: the 8 corners, then on the end the ego sees (the rear, or the front
    of an oncoming vehicle) the window quad (4 points) and the two lamp quads (4 + 4)."""
    s = np.array([v.s for v in vehicles])
    half_l = 0.5 * np.array([v.length for v in vehicles])[:, None]
    half_w = 0.5 * np.array([v.width for v in vehicles])[:, None]
    height = np.array([v.height for v in vehicles])[:, None]
    car = np.array([v.kind == "car" for v in vehicles])[:, None]
    end_x = np.where(np.array([v.oncoming for v in vehicles])[:, None], 1.0, -1.0) * (half_l + 0.02)
    cx, cy = geom.points(s, np.array([v.lat for v in vehicles]))
    yaw = geom.heading(s) + np.array([v.heading for v in vehicles])
    n = len(vehicles)
    lx = np.concatenate((half_l * _CORNER_X, np.broadcast_to(end_x, (n, 12))), axis=1)
    ly = np.concatenate((half_w * _CORNER_Y, half_w * _WINDOW_Y, half_w * _LAMP_Y), axis=1)
    lamp_lo, lamp_hi = np.where(car, 0.55, 0.5), np.where(car, 0.72, 0.75)
    lamp_z = np.concatenate((lamp_lo, lamp_lo, lamp_hi, lamp_hi), axis=1)
    lz = np.concatenate((height * _CORNER_Z, height * np.array([0.62, 0.62, 0.92, 0.92]), lamp_z, lamp_z), axis=1)
    c, sn = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return cx[:, None] + c * lx - sn * ly, cy[:, None] + sn * lx + c * ly, _Z_GROUND + lz


def _vehicle_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    vehicles = [v for v in scene.vehicles if v.rear_s > -2.0 and v.s < 170.0]
    if not vehicles:
        return
    x, y, z = _vehicle_points(geom, vehicles)
    u, v, d = cam.project(x, y, z)
    fixed = _fixed(u, v)
    corners = np.stack((x[:, :8], y[:, :8], z[:, :8]), axis=-1)
    face_centres = corners[:, _BOX_FACE_IDX].mean(axis=2)
    outward = face_centres - corners.mean(axis=1)[:, None, :]
    facing = np.einsum("nfi,nfi->nf", outward, face_centres - np.array([0.0, 0.0, cam.z0])) < 0.0
    for i, veh in enumerate(vehicles):
        if (d[i, :8] <= _NEAR_M).any():
            continue
        depth = float(d[i, :8].mean())
        bbox = (float(u[i, :8].min()), float(v[i, :8].min()), float(u[i, :8].max()), float(v[i, :8].max()))
        if veh.kind == "rock":
            jit = np.random.default_rng(veh.shape_seed).uniform(0.75, 1.1, 8)
            ui, vi = u[i, :8], v[i, :8]
            ju = ui.mean() + (ui - ui.mean()) * jit
            jv = vi.mean() + (vi - vi.mean()) * jit
            hull = cv2.convexHull(_fixed(ju, jv))
            top = cv2.convexHull(_fixed(ju[4:], jv[4:]))

            def draw_rock(hull=hull, top=top, colour=veh.colour, bbox=bbox, depth=depth) -> None:
                cv2.fillConvexPoly(canvas.img, hull, _shade(colour, 0.75), cv2.LINE_AA, _SHIFT)
                cv2.fillConvexPoly(canvas.img, top, colour, cv2.LINE_AA, _SHIFT)
                canvas.occluders.append((*bbox, depth))

            prims.append((depth, draw_rock))
            if canvas.drawn is not None:
                canvas.drawn.append(DrawnBox("rock", *bbox, depth))
            continue
        faces = [(fixed[i, list(idx)], name) for (idx, name), f in zip(_BOX_FACES, facing[i], strict=True) if f]
        detail = []  # (quad, colour) drawn over the visible end face
        lamps: list[_Emissive] = []
        rear = not veh.oncoming
        if facing[i, 0 if rear else 1]:
            if veh.kind == "car":
                detail.append((fixed[i, 8:12], (35, 40, 48)))
            if rear:
                colour = (255, 40, 40) if veh.braking else (140, 20, 22)
                glow = 1.0 if veh.braking else 0.45
            else:
                colour, glow = (255, 250, 225), 2.5
            for a in (12, 16):
                detail.append((fixed[i, a : a + 4], colour))
                if canvas.night or (rear and veh.braking):
                    uq, vq = u[i, a : a + 4], v[i, a : a + 4]
                    r = max(0.5 * float(np.hypot(uq[1] - uq[0], vq[1] - vq[0])), 0.6 * cam.scale)
                    lamps.append(_Emissive(float(uq.mean()), float(vq.mean()), r, colour, glow, depth))

        def draw_vehicle(faces=faces, detail=detail, lamps=lamps, colour=veh.colour, bbox=bbox, depth=depth) -> None:
            for quad, name in faces:
                cv2.fillConvexPoly(canvas.img, quad, _shade(colour, _FACE_SHADE[name]), cv2.LINE_AA, _SHIFT)
            for quad, c in detail:
                cv2.fillConvexPoly(canvas.img, quad, c, cv2.LINE_AA, _SHIFT)
            canvas.occluders.append((*bbox, depth))
            canvas.emissive.extend(lamps)

        prims.append((depth, draw_vehicle))
        if canvas.drawn is not None:
            canvas.drawn.append(DrawnBox("vehicle", *bbox, depth, {"kind": veh.kind, "oncoming": veh.oncoming}))


def _pole_quad(cam: Camera, u: np.ndarray, v: np.ndarray, depth: float, width_m: float) -> np.ndarray:
    """Fixed-point quad of a pole between the projected bottom (u[0], v[0]) and top (u[1], v[1])."""
    half = max(0.5 * width_m * cam.f / depth, 0.4 * cam.scale)
    return _fixed(np.array([u[0] - half, u[0] + half, u[1] + half, u[1] - half]), np.array([v[0], v[0], v[1], v[1]]))


def _light_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    lights = [light for light in scene.lights if light.housing_s > 1.0]
    if not lights:
        return
    # Per light: housing centre, pole bottom, pole top, mast-arm ends at the pole and at the housing.
    s = np.repeat([light.housing_s for light in lights], 5)
    lat = np.array([[lt.housing_lat, lt.pole_lat, lt.pole_lat, lt.pole_lat, lt.housing_lat] for lt in lights])
    arm = np.array([abs(lt.pole_lat - lt.housing_lat) > 0.5 for lt in lights])
    hh = np.array([lt.housing_height for lt in lights])
    pole_top = np.where(arm, hh, hh - 0.65)
    z = _Z_GROUND + np.stack((hh, np.zeros_like(hh), pole_top, hh + 0.35, hh + 0.35), axis=1)
    x, y = geom.points(s, lat.ravel())
    u, v, d = cam.project(x.reshape(-1, 5), y.reshape(-1, 5), z)
    for i, light in enumerate(lights):
        depth = float(d[i, 0])
        if depth <= 1.0:
            continue
        u0, v0 = float(u[i, 0]), float(v[i, 0])
        short_px = max(_TL_HOUSING_M[0] * cam.f / depth, _TL_MIN_SHORT_PX * cam.scale)
        long_px = short_px * _TL_HOUSING_M[1] / _TL_HOUSING_M[0]
        w_px, h_px = (long_px, short_px) if light.horizontal else (short_px, long_px)
        box = (u0 - 0.5 * w_px, v0 - 0.5 * h_px, u0 + 0.5 * w_px, v0 + 0.5 * h_px)
        pole = _pole_quad(cam, u[i, 1:3], v[i, 1:3], depth, 0.18) if (d[i, 1:3] > _NEAR_M).all() else None
        arm_quad = None
        if arm[i] and (d[i, 3:5] > _NEAR_M).all():
            t = max(0.12 * cam.f / depth, 0.35 * cam.scale)
            au, av = u[i, 3:5], v[i, 3:5]
            arm_quad = _fixed(
                np.array([au[0], au[1], au[1], au[0]]), np.array([av[0] - t, av[1] - t, av[1] + t, av[0] + t])
            )
        lamps: list[tuple[float, float, float, RGB, bool]] = []  # u, v, radius, colour, lit
        lit_index = -1
        states = light.lamp_states()
        box_panel = None
        if light.facing_ego:
            r = 0.3 * short_px
            for k, st in enumerate(states):
                off = (k - 1) * long_px / 3.0
                lu, lv = (u0 + off, v0) if light.horizontal else (u0, v0 + off)
                colour = {TL_RED: _RED_LAMP, TL_YELLOW: light.yellow_colour, TL_GREEN: light.go_colour}[st]
                on = st == light.state
                if on:
                    lit_index = k
                lamps.append((lu, lv, r, colour if on else _shade(colour, 0.16), on))
            if light.arrow_panel and light.state == TL_RED:
                # Arrow panel under the main housing: left and right turn arrows lit, straight arrow dark.
                pv = v0 + h_px * 0.5 + 0.45 * short_px
                for k, on in enumerate((True, False, True)):
                    off = (k - 1) * long_px / 3.0
                    lamps.append((u0 + off, pv, 0.28 * short_px, light.go_colour if on else (30, 40, 40), on))
                box_panel = (u0 - 0.5 * w_px, v0 + 0.5 * h_px, u0 + 0.5 * w_px, pv + 0.4 * short_px)
        housing_colour = (38, 38, 40) if light.facing_ego else (60, 62, 64)

        def draw_light(
            pole=pole, arm_quad=arm_quad, boxes=(box, box_panel), lamps=lamps, colour=housing_colour, depth=depth
        ) -> None:
            for quad in (pole, arm_quad):
                if quad is not None:
                    cv2.fillConvexPoly(canvas.img, quad, (70, 72, 75), cv2.LINE_AA, _SHIFT)
            for b in boxes:
                if b is not None:
                    p0 = (int(b[0] * _ONE), int(b[1] * _ONE))
                    p1 = (int(b[2] * _ONE), int(b[3] * _ONE))
                    cv2.rectangle(canvas.img, p0, p1, colour, -1, cv2.LINE_AA, _SHIFT)
            for lu, lv, r, c, on in lamps:
                if on:
                    canvas.emissive.append(_Emissive(lu, lv, r, c, 1.6, depth))
                centre = (int(lu * _ONE), int(lv * _ONE))
                cv2.circle(canvas.img, centre, int(max(r, 0.5) * _ONE), c, -1, cv2.LINE_AA, _SHIFT)

        prims.append((depth, draw_light))
        if canvas.drawn is not None:
            info = {
                "horizontal": light.horizontal,
                "state": light.state,
                "lit_index": lit_index,
                "lamp_states": states,
                "governs_ego": light.governs_ego,
                "facing_ego": light.facing_ego,
            }
            canvas.drawn.append(DrawnBox("tl_housing", *box, depth, info))


def _street_lamp_prims(canvas: _Canvas, scene: Scene, geom: RoadGeometry, prims: list) -> None:
    cam = canvas.cam
    s_hi = min(120.0, geom.scenery_range[1])
    lamps = [(s, lat) for s, lat in scene.street_lamps if 2.0 <= s <= s_hi]
    if not lamps:
        return
    # Per lamp: pole bottom, pole top, and the lamp head on an arm over the road.
    s = np.repeat([s for s, _ in lamps], 3)
    lat = np.array([[lat, lat, lat - math.copysign(1.5, lat)] for _, lat in lamps]).ravel()
    x, y = geom.points(s, lat)
    z = _Z_GROUND + np.broadcast_to(np.array([0.0, 7.5, 7.3]), (len(lamps), 3))
    u, v, d = cam.project(x.reshape(-1, 3), y.reshape(-1, 3), z)
    for i in range(len(lamps)):
        if (d[i] <= _NEAR_M).any():
            continue
        depth = float(d[i, 2])
        pole = _pole_quad(cam, u[i, :2], v[i, :2], float(d[i, :2].mean()), 0.2)
        head = (float(u[i, 2]), float(v[i, 2]), max(0.25 * cam.f / depth, 0.5 * cam.scale), depth)

        def draw(pole=pole, head=head) -> None:
            cv2.fillConvexPoly(canvas.img, pole, (85, 88, 92), cv2.LINE_AA, _SHIFT)
            hu, hv, r, dh = head
            colour = (255, 175, 70) if canvas.night else (110, 112, 115)
            centre, axes = (int(hu * _ONE), int(hv * _ONE)), (int(r * _ONE), int(0.5 * r * _ONE))
            cv2.ellipse(canvas.img, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA, _SHIFT)
            if canvas.night:
                canvas.emissive.append(_Emissive(hu, hv, r, colour, 1.0, dh))

        prims.append((depth, draw))


def _apply_lighting(canvas: _Canvas, scene: Scene) -> np.ndarray:
    img = canvas.img
    look = scene.look
    if canvas.night:
        gain = (0.2 + 0.95 * _headlight_gain(canvas.cam.height, canvas.cam.width)) * look.exposure
        out = img.astype(np.float32) * gain
    else:
        out = img.astype(np.float32) * (np.asarray(look.tint, dtype=np.float32) * look.exposure)
    # Emissive lamps: glow (blurred) added, then the lamp cores drawn over, unless something nearer hides them.
    if canvas.emissive:
        cores = np.zeros_like(img)
        any_glow = False
        for em in canvas.emissive:
            if any(
                x0 <= em.u <= x1 and y0 <= em.v <= y1 and d < em.depth - 1.0 for x0, y0, x1, y1, d in canvas.occluders
            ):
                continue
            r = max(em.radius, 0.5 * canvas.cam.scale)
            centre = (int(em.u * _ONE), int(em.v * _ONE))
            if em.glow > 0.0 and (canvas.night or em.glow >= 1.0):
                any_glow = True
                cv2.circle(
                    cores, centre, int(r * (1.0 + em.glow) * _ONE), _shade(em.colour, 0.55), -1, cv2.LINE_AA, _SHIFT
                )
            cv2.circle(cores, centre, int(r * _ONE), em.colour, -1, cv2.LINE_AA, _SHIFT)
        if any_glow:
            sigma = (1.4 if canvas.night else 0.7) * canvas.cam.scale
            glow = cv2.GaussianBlur(cores, (0, 0), sigma).astype(np.float32)
            out += glow * (1.6 if canvas.night else 0.6)
        np.maximum(out, cores.astype(np.float32), out=out)
    rng = np.random.default_rng(look.noise_seed)
    sigma = 6.0 if canvas.night else 2.0
    size = out.size
    start = int(rng.integers(0, size))
    out += _noise_bank(size)[start : start + size].reshape(out.shape) * sigma
    np.clip(out, 0.0, 255.0, out=out)
    res = out.astype(np.uint8)
    if canvas.night:
        salt = rng.random(out.shape[:2], dtype=np.float32)
        res[salt < 0.002] = 255
        res[salt > 0.998] = 0
    return res
