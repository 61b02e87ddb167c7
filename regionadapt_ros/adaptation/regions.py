"""Region definitions: the traffic rules, road geometry distributions and looks of each synthetic region.

A region is what a model is fine-tuned for. The regions differ the way real regions do:

- ``urban_day``: right-hand traffic, 50 km/h, mostly vertical traffic lights on a pole at the right kerb,
  gentle curves, parked and leading cars, buildings. The base model is trained mostly here.
- ``urban_night``: the same streets and rules at night: dark image, headlight cone, glare, sensor noise, sodium
  street lamps and tail lights that look like traffic-light lamps. Lidar is barely affected.
- ``highway``: wide lanes (3.75 m), 110 km/h, vehicles ahead to follow with a time gap, guardrails, no traffic
  lights. Speeds the urban base model never saw.
- ``mountain``: narrow two-lane road, tight curves (radius down to ~17 m), guardrails on the valley side, a rock
  wall on the other, rockfall on the road; drives slower in curves (lower lateral-acceleration budget).
- ``left_hand``: left-hand traffic with horizontal traffic lights over the road on the far side of the
  intersection (as in Japan): lamp order go / yellow / red from left to right (red on the right, nearest the
  centre line), a blue-green "go" lamp, an amber yellow, green turn-arrow panels lit under a red main light
  (the ego goes straight: the label stays red), narrow lanes and 40 km/h.

Each region names its ``primary_metric``: the evaluation metric on which a region's fine-tuned model must beat
the base model (see ``PRIMARY_METRICS`` for the direction of each).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

RGB = tuple[int, int, int]

# Metric name → True when higher is better. Computed by the evaluation on a region's held-out split.
PRIMARY_METRICS: dict[str, bool] = {
    "steering_mae": False,  # mean |steering - expert steering| [rad]
    "accel_mae": False,  # mean |accel - expert accel| [m/s^2]
    "tl_macro_f1": True,  # macro F1 over the traffic-light classes present in the split
}


@dataclass(frozen=True)
class Palette:
    """Colours (RGB) of the rendered world; the renderer jitters them per sample."""

    sky_top: RGB
    sky_horizon: RGB
    terrain: RGB
    road: RGB
    roadside: RGB  # sidewalk (urban) or shoulder / verge (highway, mountain)
    lane_marking: RGB  # dashed lines between lanes of the same direction and the outer edge lines
    centre_marking: RGB  # line between the two directions (or inner edge line on a divided highway)
    buildings: tuple[RGB, ...] = ()
    far_scenery: RGB = (110, 120, 130)  # distant hills / tree line / mountain silhouette
    rock: RGB = (120, 110, 100)


@dataclass(frozen=True)
class RegionSpec:
    """Rules, distributions and looks of one region. Units: metres, seconds, radians, 1/m."""

    name: str
    description: str
    primary_metric: str

    # --- traffic rules (used by the expert driver) ---
    driving_side: str  # "right" or "left": side of the centre line the ego's lanes are on
    speed_limit_mps: float
    curve_lat_accel_mps2: float  # lateral-acceleration budget in curves: v_curve = sqrt(a / |curvature|)
    accel_max_mps2: float  # comfortable acceleration when below the target speed
    decel_comfort_mps2: float  # planned deceleration for lights, obstacles and curves ahead
    time_gap_s: float  # following time gap to a lead vehicle
    standstill_gap_m: float  # gap to keep to a stopped vehicle / obstacle
    yellow_max_decel_mps2: float  # on yellow, stop if the needed deceleration is at most this, else go on

    # --- road ---
    scenery: str  # "urban", "highway" or "mountain": what is drawn beside the road
    lane_width_m: float
    lanes_per_direction: tuple[int, ...]  # drawn uniformly per scene
    oncoming_lanes: bool  # False: divided road (median guardrail instead of oncoming lanes)
    roadside_m: float  # sidewalk / shoulder width beyond the outer edge line
    guardrails: str  # "none", "both" (both road edges) or "valley" (one side guardrail, other side rock wall)
    street_lamps: bool
    centre_line: str  # "dashed", "solid" or "double"
    dash_m: tuple[float, float]  # dash length, gap length of lane dividers
    curve_straight_prob: float  # probability that a road segment is straight
    curve_abs_range: tuple[float, float]  # |curvature| of curved segments [1/m]
    segment_length_range: tuple[float, float]  # m

    # --- ego state distribution of independent samples ---
    speed_range_mps: tuple[float, float]
    offset_std_m: float  # ego lateral offset from the lane centre
    heading_std_rad: float

    # --- traffic lights ---
    tl_prob: float  # probability that a governing light is within view in a sample
    tl_horizontal_prob: float
    tl_overhead_prob: float  # housing on a mast arm over the ego lanes, else on a pole at the kerb
    tl_red_on_right: bool  # horizontal housings: red lamp at the right end (as in Japan) else at the left
    tl_state_probs: tuple[float, float, float]  # red, yellow, green
    # stop-line distance of a governing light (from the rear axle, the ego's reference point): from 3 m, closer
    # than where the expert stops (its front bumper 1 m before the line), as a driver passes through every
    # distance down to it (a model that never saw a light close up loses it there in closed loop)
    tl_distance_range_m: tuple[float, float]
    tl_beyond_stop_line_m: tuple[float, float]  # how far past its stop line the light stands (far side in Japan)
    tl_go_colour: RGB
    tl_yellow_colour: RGB
    tl_arrow_panel_prob: float  # probability of a turn-arrow panel lit green under a red main light
    tl_distractor_prob: float  # a light not governing the ego lane (too far, or seen from the back)

    # --- traffic and obstacles ---
    lead_prob: float  # a vehicle ahead in the ego lane
    lead_gap_range_m: tuple[float, float]
    lead_rel_speed_std_mps: float
    other_vehicles_mean: float  # Poisson mean of vehicles in other lanes (adjacent and oncoming)
    parked_cars_mean: float  # Poisson mean of cars parked at the kerb (urban)
    truck_prob: float
    rock_prob: float  # probability of rockfall in view
    rock_in_lane_prob: float  # given rockfall, probability that a rock sits in the ego lane

    # --- looks and sensors ---
    night: bool
    palette: Palette
    lidar_range_noise_m: float
    lidar_dropout: float  # fraction of rays with no return besides geometry

    @property
    def left_hand(self) -> bool:
        return self.driving_side == "left"

    @property
    def primary_metric_higher_is_better(self) -> bool:
        return PRIMARY_METRICS[self.primary_metric]


def kmh(v: float) -> float:
    """km/h → m/s."""
    return v / 3.6


_URBAN_PALETTE = Palette(
    sky_top=(120, 160, 215),
    sky_horizon=(195, 210, 225),
    terrain=(115, 120, 110),
    road=(78, 78, 82),
    roadside=(150, 148, 142),
    lane_marking=(235, 235, 230),
    centre_marking=(235, 235, 230),
    buildings=((150, 120, 100), (170, 165, 150), (120, 125, 135), (185, 170, 140), (140, 90, 75), (100, 105, 115)),
    far_scenery=(150, 160, 175),
)

_URBAN_DAY = RegionSpec(
    name="urban_day",
    description="City streets by day, right-hand traffic, 50 km/h, vertical traffic lights at the kerb.",
    primary_metric="steering_mae",
    driving_side="right",
    speed_limit_mps=kmh(50),
    curve_lat_accel_mps2=2.0,
    accel_max_mps2=1.5,
    decel_comfort_mps2=2.5,
    time_gap_s=1.4,
    standstill_gap_m=3.0,
    yellow_max_decel_mps2=3.0,
    scenery="urban",
    lane_width_m=3.25,
    lanes_per_direction=(1, 2),
    oncoming_lanes=True,
    roadside_m=3.0,
    guardrails="none",
    street_lamps=True,
    centre_line="dashed",
    dash_m=(3.0, 6.0),
    curve_straight_prob=0.55,
    curve_abs_range=(0.003, 0.02),
    segment_length_range=(30.0, 120.0),
    speed_range_mps=(0.0, 16.0),
    offset_std_m=0.35,
    heading_std_rad=0.035,
    tl_prob=0.6,
    tl_horizontal_prob=0.12,
    tl_overhead_prob=0.1,
    tl_red_on_right=False,
    tl_state_probs=(0.4, 0.2, 0.4),
    tl_distance_range_m=(3.0, 50.0),
    tl_beyond_stop_line_m=(1.0, 4.0),
    tl_go_colour=(40, 235, 90),
    tl_yellow_colour=(255, 205, 0),
    tl_arrow_panel_prob=0.0,
    tl_distractor_prob=0.25,
    lead_prob=0.4,
    lead_gap_range_m=(6.0, 70.0),
    lead_rel_speed_std_mps=1.5,
    other_vehicles_mean=1.2,
    parked_cars_mean=1.0,
    truck_prob=0.15,
    rock_prob=0.0,
    rock_in_lane_prob=0.0,
    night=False,
    palette=_URBAN_PALETTE,
    lidar_range_noise_m=0.02,
    lidar_dropout=0.02,
)

_URBAN_NIGHT = replace(
    _URBAN_DAY,
    name="urban_night",
    description="The same city streets at night: dark, headlights, glare, sodium street lamps, noise.",
    primary_metric="tl_macro_f1",
    night=True,
    palette=replace(_URBAN_PALETTE, sky_top=(8, 10, 22), sky_horizon=(30, 28, 40), far_scenery=(40, 40, 55)),
)

_HIGHWAY = RegionSpec(
    name="highway",
    description="Divided motorway, 110 km/h, 3.75 m lanes, vehicles to follow, guardrails, no traffic lights.",
    primary_metric="accel_mae",
    driving_side="right",
    speed_limit_mps=kmh(110),
    curve_lat_accel_mps2=2.0,
    accel_max_mps2=1.2,
    decel_comfort_mps2=2.0,
    time_gap_s=1.8,
    standstill_gap_m=4.0,
    yellow_max_decel_mps2=3.0,
    scenery="highway",
    lane_width_m=3.75,
    lanes_per_direction=(2, 3),
    oncoming_lanes=False,
    roadside_m=2.5,
    guardrails="both",
    street_lamps=False,
    centre_line="solid",
    dash_m=(6.0, 12.0),
    curve_straight_prob=0.5,
    curve_abs_range=(0.0005, 0.0025),
    segment_length_range=(150.0, 400.0),
    speed_range_mps=(18.0, 36.0),
    offset_std_m=0.35,
    heading_std_rad=0.015,
    tl_prob=0.0,
    tl_horizontal_prob=0.0,
    tl_overhead_prob=0.0,
    tl_red_on_right=False,
    tl_state_probs=(0.4, 0.2, 0.4),
    tl_distance_range_m=(10.0, 50.0),
    tl_beyond_stop_line_m=(1.0, 4.0),
    tl_go_colour=(40, 235, 90),
    tl_yellow_colour=(255, 205, 0),
    tl_arrow_panel_prob=0.0,
    tl_distractor_prob=0.0,
    lead_prob=0.7,
    lead_gap_range_m=(8.0, 110.0),
    lead_rel_speed_std_mps=2.5,
    other_vehicles_mean=1.5,
    parked_cars_mean=0.0,
    truck_prob=0.3,
    rock_prob=0.0,
    rock_in_lane_prob=0.0,
    night=False,
    palette=Palette(
        sky_top=(95, 145, 215),
        sky_horizon=(185, 205, 230),
        terrain=(110, 140, 80),
        road=(72, 72, 76),
        roadside=(95, 95, 98),
        lane_marking=(240, 240, 240),
        centre_marking=(240, 240, 240),
        far_scenery=(80, 110, 70),
    ),
    lidar_range_noise_m=0.02,
    lidar_dropout=0.02,
)

_MOUNTAIN = RegionSpec(
    name="mountain",
    description="Narrow mountain road, tight curves, guardrail on the valley side, rock wall, rockfall.",
    primary_metric="steering_mae",
    driving_side="right",
    speed_limit_mps=kmh(60),
    curve_lat_accel_mps2=1.2,
    accel_max_mps2=1.0,
    decel_comfort_mps2=2.0,
    time_gap_s=2.0,
    standstill_gap_m=3.0,
    yellow_max_decel_mps2=3.0,
    scenery="mountain",
    lane_width_m=3.0,
    lanes_per_direction=(1,),
    oncoming_lanes=True,
    roadside_m=0.6,
    guardrails="valley",
    street_lamps=False,
    centre_line="solid",
    dash_m=(3.0, 6.0),
    curve_straight_prob=0.15,
    curve_abs_range=(0.012, 0.06),
    segment_length_range=(25.0, 80.0),
    speed_range_mps=(3.0, 17.0),
    offset_std_m=0.3,
    heading_std_rad=0.04,
    tl_prob=0.0,
    tl_horizontal_prob=0.0,
    tl_overhead_prob=0.0,
    tl_red_on_right=False,
    tl_state_probs=(0.4, 0.2, 0.4),
    tl_distance_range_m=(10.0, 50.0),
    tl_beyond_stop_line_m=(1.0, 4.0),
    tl_go_colour=(40, 235, 90),
    tl_yellow_colour=(255, 205, 0),
    tl_arrow_panel_prob=0.0,
    tl_distractor_prob=0.0,
    lead_prob=0.2,
    lead_gap_range_m=(8.0, 60.0),
    lead_rel_speed_std_mps=1.5,
    other_vehicles_mean=0.5,
    parked_cars_mean=0.0,
    truck_prob=0.1,
    rock_prob=0.4,
    rock_in_lane_prob=0.6,
    night=False,
    palette=Palette(
        sky_top=(110, 160, 225),
        sky_horizon=(200, 215, 230),
        terrain=(85, 110, 65),
        road=(85, 84, 86),
        roadside=(125, 118, 105),
        lane_marking=(235, 235, 230),
        centre_marking=(240, 200, 40),
        far_scenery=(105, 115, 120),
        rock=(125, 112, 98),
    ),
    lidar_range_noise_m=0.03,
    lidar_dropout=0.03,
)

_LEFT_HAND = RegionSpec(
    name="left_hand",
    description="Left-hand city traffic with horizontal lights over the road (red at the right end), 40 km/h.",
    primary_metric="tl_macro_f1",
    driving_side="left",
    speed_limit_mps=kmh(40),
    curve_lat_accel_mps2=2.0,
    accel_max_mps2=1.2,
    decel_comfort_mps2=2.5,
    time_gap_s=1.5,
    standstill_gap_m=3.0,
    yellow_max_decel_mps2=3.5,
    scenery="urban",
    lane_width_m=3.0,
    lanes_per_direction=(1, 2),
    oncoming_lanes=True,
    roadside_m=2.5,
    guardrails="none",
    street_lamps=True,
    centre_line="solid",
    dash_m=(5.0, 5.0),
    curve_straight_prob=0.55,
    curve_abs_range=(0.003, 0.02),
    segment_length_range=(30.0, 120.0),
    speed_range_mps=(0.0, 13.0),
    offset_std_m=0.3,
    heading_std_rad=0.035,
    tl_prob=0.6,
    tl_horizontal_prob=1.0,
    tl_overhead_prob=1.0,
    tl_red_on_right=True,
    tl_state_probs=(0.4, 0.2, 0.4),
    tl_distance_range_m=(3.0, 50.0),
    tl_beyond_stop_line_m=(12.0, 20.0),
    tl_go_colour=(0, 200, 185),
    tl_yellow_colour=(255, 150, 0),
    tl_arrow_panel_prob=0.5,
    tl_distractor_prob=0.25,
    lead_prob=0.4,
    lead_gap_range_m=(6.0, 60.0),
    lead_rel_speed_std_mps=1.5,
    other_vehicles_mean=1.2,
    parked_cars_mean=0.6,
    truck_prob=0.15,
    rock_prob=0.0,
    rock_in_lane_prob=0.0,
    night=False,
    palette=Palette(
        sky_top=(135, 175, 220),
        sky_horizon=(205, 215, 225),
        terrain=(120, 120, 115),
        road=(88, 88, 92),
        roadside=(170, 165, 160),
        lane_marking=(240, 240, 240),
        centre_marking=(240, 240, 240),
        buildings=((205, 200, 190), (180, 185, 190), (215, 210, 200), (160, 160, 165), (190, 175, 160)),
        far_scenery=(160, 170, 185),
    ),
    lidar_range_noise_m=0.02,
    lidar_dropout=0.02,
)

REGIONS: dict[str, RegionSpec] = {
    spec.name: spec for spec in (_URBAN_DAY, _URBAN_NIGHT, _HIGHWAY, _MOUNTAIN, _LEFT_HAND)
}


def get_region(name: str | RegionSpec) -> RegionSpec:
    """The region called ``name`` (a RegionSpec is returned as is); unknown names raise ValueError."""
    if isinstance(name, RegionSpec):
        return name
    try:
        return REGIONS[name]
    except KeyError:
        known = ", ".join(sorted(REGIONS))
        raise ValueError(f"unknown region {name!r}; known regions: {known}") from None
