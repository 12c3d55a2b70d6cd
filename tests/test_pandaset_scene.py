"""A PandaSet scene (three frames of the sample, reconstructed with few steps and coarse settings)
through evaluation, the env, replay and the viewer: six 1920x1080 cameras and two LiDARs each
handled, the large rig made usable by a camera scale."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from neurodrive.logs.io import load_log
from neurodrive.reconstruct.config import ActorConfig, GeometryConfig, LidarFitConfig
from neurodrive.reconstruct.pipeline import reconstruct
from neurodrive.render.rendering import SceneRenderer
from neurodrive.scene.model import SceneModel
from tests.conftest import FAST_RECON
from tests.test_pandaset import PANDASET, _import

SMALL = replace(
    FAST_RECON,
    geometry=GeometryConfig(voxel_size_m=0.2, wall_extrusion_m=0.0),
    actors=ActorConfig(actor_voxel_size_m=0.1),
    appearance=replace(FAST_RECON.appearance, max_pixel_samples=600_000, far_field_pixels=400_000, unseen_fill_k=4),
    lidar=LidarFitConfig(intensity_samples=20_000, ray_drop_steps=300, ray_drop_batch_size=2048),
)


@pytest.fixture(scope="module")
def panda_scene(tmp_path_factory) -> tuple[Path, Path]:
    if not PANDASET.exists():
        pytest.skip(f"real data sample not found at {PANDASET} (see ../shared/realdata/README.md)")
    root = tmp_path_factory.mktemp("panda_scene")
    log_dir = _import(root / "log", frames=3)
    reconstruct(load_log(log_dir), root / "scene", SMALL)
    return log_dir, root / "scene"


def test_each_lidar_gets_its_own_model_and_evaluation(panda_scene) -> None:
    from neurodrive.reconstruct.evaluate import evaluate_reconstruction

    log_dir, scene_dir = panda_scene
    model = SceneModel.load(scene_dir)
    assert list(model.lidar_models) == ["pandar64", "pandar_gt"]
    assert model.lidar_models["pandar64"].gain == 1.0 and model.lidar_models["pandar_gt"].gain > 0
    log = load_log(log_dir)
    result = evaluate_reconstruction(model, log, lane_shift=False, actor_edits=False, supersample=1)
    assert result["frames"] == [1]  # a 3-frame log holds out its middle frame
    assert set(result["psnr_db_per_camera"]) == set(log.rig.camera_names)
    assert result["protocol"]["front_camera"] == "front_camera" and result["psnr_db_front"] > 10
    per_lidar = result["lidar_per_sensor"]
    assert set(per_lidar) == {"pandar64", "pandar_gt"}
    for name, metrics in per_lidar.items():
        assert metrics["lidar_median_depth_error_m"] < 1.0, name
        assert 0.5 < metrics["lidar_ray_drop_accuracy"] <= 1.0, name
    # each LiDAR renders from its own mount with its own pattern: the PandarGT's sweep lies ahead
    renderer = SceneRenderer(model)
    placed = renderer.place({a: p for a, p in log.actor_poses_at(1).items() if a in model.actors})
    frame = renderer.render_frame(placed, log.ego_poses[1], (), log.rig.lidars)
    assert list(frame.lidars) == ["pandar64", "pandar_gt"] and frame.lidar is frame.lidars["pandar64"]
    gt = frame.lidars["pandar_gt"].sweep
    assert gt.num_returns > 1000 and np.mean(gt.xyz_m[:, 1] > 0) > 0.95  # Hesai axes: y forward


def test_env_observes_both_lidars_and_scaled_cameras(panda_scene) -> None:
    import gymnasium

    import neurodrive.envs  # noqa: F401 - registers the environment

    _, scene_dir = panda_scene
    sensors = {"cameras": ["front_camera", "back_camera"], "lidar": True, "camera_scale": 0.1}
    env = gymnasium.make("neurodrive/ClosedLoop-v0", scene=str(scene_dir), duration_s=0.5, sensors=sensors)
    space = env.observation_space
    assert space["camera_front_camera"].shape == (108, 192, 3)
    assert {"lidar", "lidar_pandar_gt"} <= set(space.spaces)
    obs, _ = env.reset(seed=0)
    assert space.contains(obs)
    assert np.count_nonzero(obs["lidar"][0]) > 1000 and np.count_nonzero(obs["lidar_pandar_gt"][0]) > 1000
    env.close()


def test_replay_and_the_viewer_run_on_the_pandaset_scene(panda_scene, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from neurodrive.app.cli import app
    from neurodrive.app.viewer import Viewer, auto_camera_scale, headless, load_scenario

    _, scene_dir = panda_scene
    scenario = {
        "name": "pandaset",
        "scene": str(scene_dir),
        "duration_s": 0.3,
        "sensors": {"cameras": ["front_left_camera", "front_camera", "front_right_camera"], "camera_scale": 0.1},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(scenario))
    result = CliRunner().invoke(
        app, ["replay", str(tmp_path / "s.yaml"), "--agent", "idm", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["map"].startswith("none") and (tmp_path / "r" / "video.mp4").stat().st_size > 5_000

    assert auto_camera_scale(6 * 1920 * 1080) == 0.34 and auto_camera_scale(640 * 360) == 1.0
    assert load_scenario(scene_dir)[0].sensors.camera_scale == 0.34  # a scene's rig is scaled by default
    headless()
    viewer = Viewer(scene_dir, tmp_path / "edited.yaml", max_size_px=(1000, 700), camera_scale=0.05)
    try:
        assert [c.width_px for c in viewer.sim.rig.cameras] == [96] * 6 and len(viewer.sim.rig.lidars) == 2
        viewer.run(max_frames=2)
        assert viewer.obs.sensors is not None and set(viewer.obs.sensors.lidars) == {"pandar64", "pandar_gt"}
    finally:
        viewer.close()
