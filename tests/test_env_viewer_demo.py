"""Gymnasium environment, pygame viewer (headless) and the demo pipeline on the tiny scene."""

from __future__ import annotations

import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import neurodrive  # noqa: F401  (registers the environment)
from neurodrive.app.viewer import headless
from neurodrive.envs.closed_loop import EnvConfig
from neurodrive.scenarios.scenario import Scenario

CUT_IN = {
    "id": "cutter",
    "asset": "vehicle_001",
    "trajectory": [[0.0, 6.0, -1.75, 0.0], [1.0, 11.0, -1.75, 0.0], [2.5, 17.0, -5.25, -0.05], [4.0, 22.0, -5.25, 0.0]],
}
SMALL = {"cameras": ["front"], "lidar": True}


@pytest.mark.parametrize(
    "config", [EnvConfig(), {"action_type": "waypoints", "lidar": {"format": "points", "num_points": 512}}]
)
def test_env_passes_the_gymnasium_checker(tiny_scene_dir: Path, config: EnvConfig | dict) -> None:
    env = gym.make(
        "neurodrive/ClosedLoop-v0",
        scene=tiny_scene_dir,
        duration_s=1.0,
        sensors=SMALL,
        config=config,
        render_mode="rgb_array",
    )
    check_env(env.unwrapped, skip_render_check=False)
    config = env.unwrapped.config
    obs, _ = env.reset(seed=0)
    assert obs["camera_front"].dtype == np.uint8 and obs["camera_front"].shape == (90, 160, 3)
    if config.lidar.format == "points":
        assert obs["lidar"].shape == (512, 4) and env.action_space.shape == (5, 2)
    assert (
        obs["lidar"].dtype == np.float32
        and np.count_nonzero(obs["lidar"][0 if config.lidar.format == "range_image" else slice(None)]) > 100
    )
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[0] == 360 and frame.std() > 10
    env.close()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"lidar": {"format": "voxels"}}, r"lidar\.format must be 'range_image' or 'points', got 'voxels'"),
        ({"lidar": {"num_points": 0}}, r"lidar\.num_points must be within 1 \.\. 1000000, got 0"),
        ({"route": {"spacing_m": -5.0}}, r"route\.spacing_m must be within 0\.1 \.\. 100 m, got -5\.0"),
        ({"waypoints": {"count": 0}}, r"waypoints\.count must be within 1 \.\. 100, got 0"),
        ({"continuous": {"max_steering_rad": 3.0}}, r"continuous\.max_steering_rad must be within"),
        ({"action_type": "teleport"}, r"action_type must be 'continuous' or 'waypoints', got 'teleport'"),
        ({"lidar_format": "points"}, r"unknown field\(s\) \['lidar_format'\]"),
        ({"route": {"point": 3}}, r"EnvConfig\.route: .*unexpected keyword argument 'point'"),
    ],
)
def test_env_config_names_the_bad_field(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnvConfig.from_dict(raw)


def test_env_reset_is_deterministic_and_episodes_end(tiny_scene_dir: Path) -> None:
    env = gym.make("neurodrive/ClosedLoop-v0", scene=tiny_scene_dir, duration_s=1.0, sensors=SMALL)
    a, _ = env.reset(seed=5)
    for _ in range(3):
        env.step(np.array([0.5, 0.0], np.float32))
    b, _ = env.reset(seed=5)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    steps, done = 0, False
    while not done:
        _, reward, terminated, truncated, info = env.step(np.array([0.0, 0.0], np.float32))
        steps += 1
        done = terminated or truncated
    assert truncated and not terminated and steps == 10 and reward > 0 and info["progress_m"] > 5


def test_collision_terminates_with_a_penalty(tiny_scene_dir: Path) -> None:
    env = gym.make(
        "neurodrive/ClosedLoop-v0",
        scene=tiny_scene_dir,
        duration_s=5.0,
        sensors={"cameras": [], "lidar": True},
        actors={"insert": [CUT_IN]},
    )
    env.reset(seed=0)
    rewards, terminated, info = [], False, {}
    while not terminated:
        _, r, terminated, truncated, info = env.step(np.array([0.0, 0.0], np.float32))  # constant velocity
        rewards.append(r)
        assert not truncated
    assert info["collisions"] == ["cutter"] and rewards[-1] < -40
    assert env.unwrapped.episode_metrics()["neuroncap_score"] < 5


def test_async_vector_env_and_ppo_smoke(tiny_scene_dir: Path) -> None:
    envs = gym.make_vec(
        "neurodrive/ClosedLoop-v0",
        num_envs=2,
        vectorization_mode="async",
        scene=str(tiny_scene_dir),
        duration_s=0.5,
        sensors=SMALL,
    )
    obs, _ = envs.reset(seed=[1, 2])
    assert obs["camera_front"].shape == (2, 90, 160, 3)
    for _ in range(8):  # runs past the 5-step episodes: autoreset
        obs, reward, terminated, truncated, _ = envs.step(envs.action_space.sample())
    assert reward.shape == (2,)
    envs.close()
    from stable_baselines3 import PPO

    env = gym.make("neurodrive/ClosedLoop-v0", scene=tiny_scene_dir, duration_s=2.0, sensors=SMALL)
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action.astype(np.float32))


def test_viewer_headless_drive_edit_save_and_screenshot(tiny_scene_dir: Path, tmp_path: Path) -> None:
    headless()
    import pygame

    from neurodrive.app.viewer import Viewer

    viewer = Viewer(tiny_scene_dir, tmp_path / "edited.yaml")
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_UP))
    viewer.run(max_frames=5)
    assert viewer.agent.keys.up and viewer.obs.ego.accel_mps2 > 0.5  # the held key accelerates
    car = viewer.obs.actors["vehicle_000"]
    start = viewer.pixel_of(np.array([car.x_m, car.y_m]))
    viewer.handle(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=start))
    assert viewer.selected == "vehicle_000"
    viewer.handle(pygame.event.Event(pygame.MOUSEBUTTONUP, button=1, pos=(start[0] - 30, start[1])))  # drag left
    assert viewer.obs.actors["vehicle_000"].y_m > car.y_m + 3.0
    viewer.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_i))
    inserted = viewer.selected
    assert inserted in viewer.obs.actors and inserted in viewer.sim.scene.actors
    other = viewer.obs.actors["vehicle_001"]
    viewer.handle(
        pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=viewer.pixel_of(np.array([other.x_m, other.y_m])))
    )
    viewer.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_x))
    assert "vehicle_001" not in viewer.obs.actors
    viewer.tick()
    shot = viewer.screenshot(tmp_path / "shot.png")
    image = np.asarray(pygame.surfarray.array3d(pygame.image.load(str(shot))))
    assert image.shape[:2] == (viewer.screen.get_width(), viewer.screen.get_height()) and image.std() > 20
    viewer.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_s))
    saved = Scenario.load(tmp_path / "edited.yaml")
    assert saved.actors.remove == ["vehicle_001"] and "vehicle_000" in saved.actors.repose
    assert [i.id for i in saved.actors.insert] == [inserted]
    viewer.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE))
    assert not viewer.running
    viewer.close()


def test_demo_pipeline_reuses_finished_stages(tiny_log_dir: Path, tiny_scene_dir: Path, tmp_path: Path) -> None:
    from neurodrive.app.demo import run_demo

    out = tmp_path / "demo"
    shutil.copytree(tiny_log_dir, out / "log")
    shutil.copytree(tiny_scene_dir, out / "scene")
    stages: set[str] = set()
    results = run_demo(out, "tiny", progress=lambda stage, done, total: stages.add(stage), log_only=lambda msg: None)
    assert not any(s.startswith(("1/3", "2/3")) for s in stages)  # nothing regenerated
    assert results["lidar-aeb"]["collisions"] == [] and results["constant-velocity"]["collisions"]
    report = (out / "report.md").read_text()
    assert "lidar-aeb" in report and "constant-velocity" in report
    for agent in results:
        assert (out / "replay" / agent / "video.mp4").stat().st_size > 10_000


def test_human_render_mode_draws_a_window_headless(tiny_scene_dir: Path) -> None:
    headless()
    import pygame

    env = gym.make("neurodrive/ClosedLoop-v0", scene=tiny_scene_dir, duration_s=0.5, sensors=SMALL, render_mode="human")
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    window = pygame.display.get_surface()
    assert window is not None and pygame.surfarray.array3d(window).std() > 10
    env.close()
    assert pygame.display.get_surface() is None
