"""Closed-loop metrics, one small class each, and the nuPlan-style and NeuroNCAP scores.

Definitions and sources: docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from scipy.signal import savgol_filter

from neurodrive.logs.model import RoadMap
from neurodrive.sim.collisions import CollisionEvent
from neurodrive.sim.paths import Polyline
from neurodrive.sim.state import ActorState, box_corners_xy
from neurodrive.sim.vehicle import VehicleParameters


@dataclass
class EpisodeRecord:
    """Everything metrics need, filled step by step by the simulator."""

    dt_s: float
    params: VehicleParameters
    route: Polyline
    road_map: RoadMap
    expert_progress_m: float  # how far the logged ego got along the route in the same time
    start_speed_mps: float
    times_s: list[float] = field(default_factory=list)
    ego: list[np.ndarray] = field(default_factory=list)  # per step [x, y, yaw, speed, accel, steering] (rear axle)
    actors: list[list[ActorState]] = field(default_factory=list)
    collisions: list[CollisionEvent] = field(default_factory=list)

    def ego_array(self) -> np.ndarray:
        return np.array(self.ego).reshape(-1, 6)

    def ego_centres(self) -> np.ndarray:
        e = self.ego_array()
        r = self.params.rear_axle_to_centre_m
        return np.stack([e[:, 0] + r * np.cos(e[:, 2]), e[:, 1] + r * np.sin(e[:, 2])], axis=1)

    def progress_m(self) -> np.ndarray:
        s, _ = self.route.project(self.ego_centres())
        return s - s[0]


@dataclass(frozen=True)
class MetricResult:
    name: str
    score: float  # in [0, 1] (multipliers: 0, 0.5 or 1)
    value: float  # the measured quantity behind the score
    unit: str = ""
    details: dict = field(default_factory=dict)


class Metric:
    """One closed-loop metric: ``compute(record) -> MetricResult``. Register with ``@register_metric``."""

    name = ""

    def compute(self, record: EpisodeRecord) -> MetricResult:
        raise NotImplementedError


METRICS: dict[str, type[Metric]] = {}


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Class decorator: makes a metric available by its ``name`` (to scores and reports)."""
    if not cls.name or cls.name in METRICS:
        raise ValueError(f"metric {cls.__name__} needs a unique name, got {cls.name!r}")
    METRICS[cls.name] = cls
    return cls


@register_metric
class NoAtFaultCollisions(Metric):
    """1 without an at-fault collision, else 0 (nuPlan: no_ego_at_fault_collisions)."""

    name = "no_at_fault_collisions"

    def compute(self, record: EpisodeRecord) -> MetricResult:
        at_fault = [c for c in record.collisions if c.at_fault]
        return MetricResult(
            self.name,
            0.0 if at_fault else 1.0,
            float(len(at_fault)),
            "collisions",
            {"all_collisions": len(record.collisions)},
        )


def drivable_area(road_map: RoadMap) -> shapely.Geometry:
    """Union of the map's drivable-area polygons."""
    return shapely.union_all([shapely.Polygon(p) for p in road_map.drivable_areas])


def distance_outside_m(area: shapely.Geometry, points_xy: np.ndarray) -> np.ndarray:
    """(n,) distance of each point from ``area`` (0 inside; inf without any drivable area)."""
    if area.is_empty:
        return np.full(len(points_xy), np.inf)
    return shapely.distance(area, shapely.points(points_xy))


@register_metric
class DrivableAreaCompliance(Metric):
    """1 when no ego corner leaves the map's drivable area by more than 0.3 m (nuPlan)."""

    name = "drivable_area_compliance"
    max_violation_m = 0.3

    def compute(self, record: EpisodeRecord) -> MetricResult:
        outside = outside_per_step_m(record)
        worst = float(np.max(outside)) if len(outside) else 0.0
        return MetricResult(self.name, 1.0 if worst <= self.max_violation_m else 0.0, worst, "m")


def outside_per_step_m(record: EpisodeRecord) -> np.ndarray:
    """(steps,) how far the ego's farthest corner is outside the drivable area at each step (0: inside)."""
    c = record.ego_centres()
    e = record.ego_array()
    corners = box_corners_xy(c[:, 0], c[:, 1], e[:, 2], record.params.length_m, record.params.width_m)
    outside = distance_outside_m(drivable_area(record.road_map), corners.reshape(-1, 2))
    return outside.reshape(len(e), -1).max(axis=1) if len(e) else np.zeros(0)


def lane_under(road_map: RoadMap, xy: np.ndarray) -> tuple[int | None, float, float]:
    """(lane index, arc length, heading) of the lane whose centreline is nearest to ``xy`` and within its width."""
    best, best_d, s_best, h_best = None, np.inf, 0.0, 0.0
    for k, lane in enumerate(road_map.lanes):
        line = Polyline(lane.centerline_m)
        s, lat = line.project(xy)
        if abs(lat) <= lane.width_m / 2 and abs(lat) < best_d:
            best, best_d, s_best, h_best = k, float(abs(lat)), float(s), float(line.heading(s))
    return best, s_best, h_best


@register_metric
class DrivingDirectionCompliance(Metric):
    """Distance driven against the lane direction within any 1 s window: <= 2 m -> 1, <= 6 m -> 0.5, else 0 (nuPlan)."""

    name = "driving_direction_compliance"
    window_s = 1.0

    def compute(self, record: EpisodeRecord) -> MetricResult:
        c = record.ego_centres()
        along = np.zeros(len(c))
        for k in range(1, len(c)):
            lane, _, heading = lane_under(record.road_map, c[k])
            if lane is not None:
                along[k] = np.dot(c[k] - c[k - 1], [np.cos(heading), np.sin(heading)])
        w = max(1, int(round(self.window_s / record.dt_s)))
        against = np.convolve(np.minimum(along, 0.0), np.ones(w), mode="full")[: len(along)]
        worst = max(0.0, float(-against.min())) if len(against) else 0.0
        return MetricResult(self.name, 1.0 if worst <= 2.0 else (0.5 if worst <= 6.0 else 0.0), worst, "m")


@register_metric
class EgoProgress(Metric):
    """Progress along the route relative to the logged expert's, clipped to [0, 1] (nuPlan)."""

    name = "ego_progress"
    min_expert_progress_m = 5.0

    def compute(self, record: EpisodeRecord) -> MetricResult:
        progress = float(record.progress_m()[-1]) if record.ego else 0.0
        expert = record.expert_progress_m
        ratio = 1.0 if expert < self.min_expert_progress_m else float(np.clip(progress / expert, 0.0, 1.0))
        return MetricResult(self.name, ratio, progress, "m", {"expert_progress_m": expert})


@register_metric
class MakingProgress(Metric):
    """1 when the progress ratio reaches 0.2 (nuPlan: ego_is_making_progress)."""

    name = "making_progress"

    def compute(self, record: EpisodeRecord) -> MetricResult:
        ratio = EgoProgress().compute(record).score
        return MetricResult(self.name, 1.0 if ratio >= 0.2 else 0.0, ratio, "ratio")


def time_to_collision_s(
    ego: ActorState, actors: list[ActorState], horizon_s: float = 1.0, step_s: float = 0.1
) -> float:
    """Earliest time the boxes would overlap if everyone kept their velocity (inf: none within the horizon)."""
    if ego.speed_mps <= 0.05 or not actors:
        return float("inf")
    for t in np.arange(step_s, horizon_s + 1e-9, step_s):

        def moved(a: ActorState, t: float = t) -> ActorState:
            v = a.velocity_xy() * t
            return ActorState(
                a.actor_id, a.category, a.x_m + v[0], a.y_m + v[1], a.z_m, a.yaw_rad, a.speed_mps, a.size_m
            )

        e = moved(ego)
        ego_poly = shapely.polygons(box_corners_xy(e.x_m, e.y_m, e.yaw_rad, e.size_m[0], e.size_m[1]))[0]
        arr = np.array([[m.x_m, m.y_m, m.yaw_rad, m.size_m[0], m.size_m[1]] for m in map(moved, actors)])
        polys = shapely.polygons(box_corners_xy(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4]))
        if np.any(shapely.intersects(ego_poly, polys)):
            return float(t)
    return float("inf")


@register_metric
class TimeToCollisionWithinBound(Metric):
    """1 when the constant-velocity time to collision never drops below 0.95 s (nuPlan; horizon 1 s).
    Actors the ego already touches are left out, as nuPlan does."""

    name = "time_to_collision_within_bound"
    least_ttc_s = 0.95

    def compute(self, record: EpisodeRecord) -> MetricResult:
        ttc = ttc_per_step_s(record)
        worst = float(ttc.min()) if len(ttc) else float("inf")
        return MetricResult(self.name, 1.0 if worst >= self.least_ttc_s else 0.0, worst, "s")


def ttc_per_step_s(record: EpisodeRecord, near_m: float = 40.0) -> np.ndarray:
    """(steps,) constant-velocity time to collision with the actors within ``near_m`` at each step (inf:
    none within the 1 s horizon); actors the ego already touched are left out, as nuPlan does."""
    e = record.ego_array()
    c = record.ego_centres()
    p = record.params
    collided: set[str] = set()
    ttc = np.full(len(record.actors), np.inf)
    for k, actors in enumerate(record.actors):
        t = record.times_s[k]
        collided |= {ev.actor_id for ev in record.collisions if ev.time_s <= t + 1e-9}
        ego = ActorState("ego", "car", c[k, 0], c[k, 1], 0.0, e[k, 2], e[k, 3], (p.length_m, p.width_m, p.height_m))
        near = [a for a in actors if a.actor_id not in collided and np.hypot(a.x_m - ego.x_m, a.y_m - ego.y_m) < near_m]
        ttc[k] = time_to_collision_s(ego, near)
    return ttc


@register_metric
class SpeedLimitCompliance(Metric):
    """1 - mean overspeed / 2.23 m/s, at least 0 (nuPlan); the limit is that of the lane under the ego."""

    name = "speed_limit_compliance"
    max_overspeed_mps = 2.23

    def compute(self, record: EpisodeRecord) -> MetricResult:
        e = record.ego_array()
        over = []
        for xy, v in zip(record.ego_centres(), e[:, 3]):
            lane, _, _ = lane_under(record.road_map, xy)
            limit = record.road_map.lanes[lane].speed_limit_mps if lane is not None else np.inf
            over.append(max(0.0, v - limit))
        mean_over = float(np.mean(over)) if over else 0.0
        return MetricResult(self.name, max(0.0, 1.0 - mean_over / self.max_overspeed_mps), mean_over, "m/s")


COMFORT_BOUNDS = {  # nuPlan ego_is_comfortable
    "lon_accel_mps2": (-4.05, 2.40),
    "lat_accel_mps2": (-4.89, 4.89),
    "jerk_mps3": (-4.13, 4.13),
    "lon_jerk_mps3": (-4.13, 4.13),
    "yaw_rate_radps": (-0.95, 0.95),
    "yaw_accel_radps2": (-1.93, 1.93),
}


def comfort_signals(record: EpisodeRecord) -> dict[str, np.ndarray]:
    """Smoothed (Savitzky-Golay, as nuPlan) kinematic signals of the ego."""
    e = record.ego_array()
    dt = record.dt_s
    n = len(e)
    if n < 5:
        return {k: np.zeros(n) for k in COMFORT_BOUNDS}
    window = min(15, n if n % 2 else n - 1)

    def deriv(x: np.ndarray, order: int = 1) -> np.ndarray:
        return savgol_filter(x, window, polyorder=min(2, window - 1), deriv=order, delta=dt, mode="interp")

    yaw = np.unwrap(e[:, 2])
    speed = e[:, 3]
    lon_accel = deriv(speed)
    yaw_rate = deriv(yaw)
    return {
        "lon_accel_mps2": lon_accel,
        "lat_accel_mps2": speed * yaw_rate,
        "jerk_mps3": deriv(speed, 2),
        "lon_jerk_mps3": deriv(lon_accel),
        "yaw_rate_radps": yaw_rate,
        "yaw_accel_radps2": deriv(yaw, 2),
    }


@register_metric
class Comfort(Metric):
    """1 when every smoothed signal stays within nuPlan's bounds."""

    name = "ego_is_comfortable"

    def compute(self, record: EpisodeRecord) -> MetricResult:
        signals = comfort_signals(record)
        violated = [
            k
            for k, (lo, hi) in COMFORT_BOUNDS.items()
            if len(signals[k]) and (signals[k].min() < lo or signals[k].max() > hi)
        ]
        extremes = {k: float(np.max(np.abs(v))) if len(v) else 0.0 for k, v in signals.items()}
        return MetricResult(
            self.name,
            0.0 if violated else 1.0,
            float(len(violated)),
            "violated signals",
            {"violated": violated, "max_abs": extremes},
        )


@dataclass(frozen=True)
class ScoreDefinition:
    """A nuPlan-style closed-loop score: the product of the multiplier metrics' scores times the
    weighted average of the weighted metrics' scores.

    Attributes:
        multipliers: names of metrics whose scores multiply the total (any 0 zeroes it).
        weights: metric name -> weight of its score in the weighted average.
    """

    multipliers: tuple[str, ...]
    weights: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        unknown = [n for n in (*self.multipliers, *(n for n, _ in self.weights)) if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; registered: {sorted(METRICS)}")
        if not self.weights or any(w <= 0 for _, w in self.weights):
            raise ValueError("weights must be positive and at least one metric must be weighted")

    def metric_names(self) -> tuple[str, ...]:
        return (*self.multipliers, *(n for n, _ in self.weights))

    def score(self, results: dict[str, MetricResult]) -> float:
        product = float(np.prod([results[n].score for n in self.multipliers]))
        total = sum(w for _, w in self.weights)
        return product * sum(results[n].score * w for n, w in self.weights) / total


NUPLAN_SCORE = ScoreDefinition(  # nuPlan's closed-loop score (CLS) multipliers and weights
    multipliers=(
        NoAtFaultCollisions.name,
        DrivableAreaCompliance.name,
        DrivingDirectionCompliance.name,
        MakingProgress.name,
    ),
    weights=(
        (TimeToCollisionWithinBound.name, 5.0),
        (EgoProgress.name, 5.0),
        (SpeedLimitCompliance.name, 4.0),
        (Comfort.name, 2.0),
    ),
)


def neuroncap_score(record: EpisodeRecord, reference_speed_mps: float | None = None) -> float:
    """NeuroNCAP: 5 without a collision, else 4 * max(0, 1 - v_impact / v_ref), v_ref the speed the ego
    would hit with had it not reacted (its start speed)."""
    if not record.collisions:
        return 5.0
    v_ref = reference_speed_mps if reference_speed_mps is not None else record.start_speed_mps
    v_impact = record.collisions[0].relative_speed_mps
    return float(4.0 * max(0.0, 1.0 - v_impact / max(v_ref, 1e-6)))


def step_series(record: EpisodeRecord) -> dict[str, np.ndarray]:
    """Per-step signals behind the episode metrics (each (steps,)): route progress (m), speed (m/s),
    the comfort signals, time to collision (s, inf: none within 1 s), distance outside the drivable
    area (m) and collisions so far."""
    times = np.asarray(record.times_s)
    hits = np.array([ev.time_s for ev in record.collisions])
    series = {
        "progress_m": record.progress_m() if record.ego else np.zeros(0),
        "speed_mps": record.ego_array()[:, 3],
        **comfort_signals(record),
        "time_to_collision_s": ttc_per_step_s(record),
        "outside_drivable_m": outside_per_step_m(record),
        "collisions": (hits[None, :] <= times[:, None] + 1e-9).sum(axis=1).astype(float),
    }
    return series


def evaluate_episode(record: EpisodeRecord, definition: ScoreDefinition = NUPLAN_SCORE) -> dict:
    """All metrics of ``definition``, its score (nuPlan's by default) and the NeuroNCAP score, as a
    JSON-ready dict."""
    results = {name: METRICS[name]().compute(record) for name in definition.metric_names()}
    e = record.ego_array()
    ttc = results.get(TimeToCollisionWithinBound.name)
    return {
        "nuplan_score": float(definition.score(results)),
        "neuroncap_score": neuroncap_score(record),
        "metrics": {
            r.name: {"score": r.score, "value": r.value, "unit": r.unit, **r.details} for r in results.values()
        },
        "collisions": [c.__dict__ for c in record.collisions],
        "progress_m": float(record.progress_m()[-1]) if record.ego else 0.0,
        "duration_s": float(record.times_s[-1] - record.times_s[0]) if record.times_s else 0.0,
        "mean_speed_mps": float(e[:, 3].mean()) if len(e) else 0.0,
        "min_time_to_collision_s": ttc.value if ttc is not None else None,
    }
