"""Actors up close and removed: smooth filling of unseen texels, the car size template of auto tracks,
removal and close-up PSNR against the generated world."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodrive.logs.io import load_log
from neurodrive.reconstruct.actor_quality import actor_edit_quality
from neurodrive.reconstruct.dynamic import CAR_TEMPLATE_M, chain_to_track
from neurodrive.reconstruct.texturing import fill_unobserved
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scene.model import SceneModel


def test_unseen_texels_are_blended_from_several_neighbours_not_copied() -> None:
    """A hole between a dark and a bright surface: copying the nearest gives a hard step in the middle,
    the weighted fill a ramp from one side to the other."""
    x = np.linspace(0.0, 2.0, 201)
    centres = np.column_stack([x, np.zeros_like(x), np.zeros_like(x)])
    values = np.where(x < 1.0, 0.0, 1.0)[:, None] * np.ones((1, 3))
    observed = (x < 0.5) | (x > 1.5)
    copied, filled = fill_unobserved(values, observed, centres)
    assert filled.all() and set(np.unique(copied[~observed, 0])) == {0.0, 1.0}
    blended, _ = fill_unobserved(values, observed, centres, k=16)
    hole = blended[~observed, 0]
    assert np.all(np.diff(hole) >= -1e-6) and 0.3 < hole[len(hole) // 2] < 0.7
    assert np.array_equal(blended[observed], values[observed])


def test_a_car_seen_from_behind_gets_the_template_length_grown_away_from_the_sensor() -> None:
    """Returns of a rear face only (1.8 m wide, 0.3 m deep) moving along +x, the LiDAR behind it."""
    rng = np.random.default_rng(0)
    chain = []
    for f in range(5):
        face = np.column_stack(
            [10.0 + f + rng.uniform(0, 0.3, 300), rng.uniform(-0.9, 0.9, 300), rng.uniform(0.3, 1.5, 300)]
        )
        chain.append((f, face))
    sensor_xy = {f: np.array([float(f), 0.0]) for f in range(5)}
    bare = chain_to_track(chain, "auto-000", 5)
    templated = chain_to_track(chain, "auto-000", 5, sensor_xy)
    assert bare.size_m[0] < 1.0
    assert np.isclose(templated.size_m[0], CAR_TEMPLATE_M[0])
    # the seen face stays where it was: the box grew forwards (away from the LiDAR)
    rear_bare = bare.poses[0, 0, 3] - bare.size_m[0] / 2
    rear_templated = templated.poses[0, 0, 3] - templated.size_m[0] / 2
    assert abs(rear_bare - rear_templated) < 1e-3
    assert np.isclose(templated.size_m[1], bare.size_m[1])  # as wide as seen: not grown


def test_actor_edits_are_measured_against_the_generated_world(tiny_log_dir: Path, tiny_scene_dir: Path) -> None:
    log = load_log(tiny_log_dir)
    model = SceneModel.load(tiny_scene_dir)
    result = actor_edit_quality(SceneRenderer(model), log, model.meta.holdout_frames, max_views=2)
    assert len(result["actor_removal_views"]) >= 1 and result["actor_close_up_views"] >= 2
    assert result["actor_removal_psnr_db"] > 18.0
    # textured from the logged views, a car seen from 3 m beats a flat patch of its own true mean colour
    assert result["actor_close_up_psnr_db"] > result["actor_close_up_flat_colour_psnr_db"]


def test_a_car_without_returns_gets_the_category_template_not_a_box() -> None:
    from neurodrive.logs.model import ActorTrack
    from neurodrive.reconstruct.actors import fit_actor
    from neurodrive.reconstruct.config import ReconConfig

    size = np.array([4.5, 1.8, 1.5])
    poses = np.tile(np.eye(4), (2, 1, 1))
    car = ActorTrack("car", "car", size, poses, np.ones(2, bool))
    v, t, n = fit_actor(car, [], ReconConfig())
    assert n == 0 and len(t) >= 50
    assert np.ptp(v[:, 0]) > 0.95 * size[0] and np.ptp(v[:, 1]) > 0.9 * size[1]
    roof = v[v[:, 2] > size[2] / 2 - 0.05]
    assert len(roof) and np.ptp(roof[:, 0]) < 0.5 * size[0]  # a cabin on a body, not a box
    person = ActorTrack("p", "pedestrian", np.array([0.5, 0.6, 1.7]), poses, np.ones(2, bool))
    pv, _, _ = fit_actor(person, [], ReconConfig())
    assert np.ptp(pv[pv[:, 2] > 0.8][:, 0]) > 0.45  # people keep their box
