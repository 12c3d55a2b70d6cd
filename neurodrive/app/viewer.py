"""Interactive pygame viewer: drive the ego with the keyboard, see the cameras and the LiDAR bird's-eye
view, pick actors to remove or drag them, insert actors, save the edits as a scenario YAML.

Keys: arrows (or W, A, D) drive; click an actor in the bird's-eye view to select it, drag to move it;
Delete or X removes it; I inserts a copy of the selected (or first) car 15 m ahead; S saves the
scenario; R restarts; Space pauses; Esc or Q quits.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from neurodrive.agents.keyboard import KeyboardAgent
from neurodrive.app.replay import scenario_inputs
from neurodrive.io_utils import atomic_write_bytes, check_apart
from neurodrive.logs.io import load_log
from neurodrive.scenarios.scenario import Scenario, Sensors
from neurodrive.scene.meta import SceneMeta
from neurodrive.sim.simulator import Observation, SimConfig, Simulator
from neurodrive.viz.bev import BevProjection, BevStyle
from neurodrive.viz.frames import compose_frame

PANEL_HEIGHT_PX = 360  # panel height at full size; smaller when the window must fit the screen
MIN_PANEL_HEIGHT_PX = 120
HUD_LINE_PX = 26
HUD_LINES = 4
PICK_RADIUS_M = 3.0
LOW_REALISM = 0.35  # below this realism confidence the HUD warns that the view is far from the log
KEY_HELP = (
    "keys: arrows/WASD drive   click an actor to select, drag to move   X remove",
    "I insert a car ahead   S save scenario   R restart   Space pause   Esc quit",
)


class NoDisplayError(RuntimeError):
    """There is no screen to open a window on."""


def check_display() -> None:
    """Raise NoDisplayError unless a window can be shown (an X11 / Wayland display, or SDL's dummy
    driver chosen on purpose for tests)."""
    if os.environ.get("SDL_VIDEODRIVER") in ("dummy", "offscreen"):
        return
    if (
        not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        and os.name == "posix"
        and os.uname().sysname == "Linux"
    ):
        raise NoDisplayError(
            "no display found (DISPLAY and WAYLAND_DISPLAY are not set): the viewer needs a screen; "
            "use `neurodrive replay` to record a video instead"
        )


def fit_panel_height(frame_width_px: int, frame_height_px: int, max_width_px: int, max_height_px: int) -> int:
    """The panel height that makes a composed frame of this shape (at PANEL_HEIGHT_PX) plus the HUD
    fit ``max_width_px`` x ``max_height_px``."""
    room_h = max_height_px - HUD_LINES * HUD_LINE_PX
    scale = min(1.0, max_width_px / frame_width_px, room_h / frame_height_px)
    return int(max(MIN_PANEL_HEIGHT_PX, PANEL_HEIGHT_PX * scale))


VIEWER_PIXEL_BUDGET = 1_500_000  # camera pixels rendered per frame by default (the rig scaled to fit)


def auto_camera_scale(total_pixels: int, budget_px: int = VIEWER_PIXEL_BUDGET) -> float:
    """The camera scale that brings a rig of ``total_pixels`` within ``budget_px`` (1 when it fits):
    PandaSet's six 1920x1080 cameras (12.4 Mpx) render at 0.34."""
    return 1.0 if total_pixels <= budget_px else math.floor(100 * math.sqrt(budget_px / total_pixels)) / 100


def load_scenario(target: str | Path, camera_scale: float | None = None) -> tuple[Scenario, str]:
    """A scenario file, or a scene folder (viewed with a default scenario whose cameras are scaled to
    ``auto_camera_scale``). ``camera_scale`` overrides either."""
    target = Path(target)
    if target.is_dir():
        raw = {"name": f"{target.name}-edited", "scene": str(target.resolve()), "duration_s": 600.0}
        log_path = Path(SceneMeta.read(target).log.path)
        if camera_scale is None and (log_path / "log.json").is_file():  # else the simulator says it is missing
            rig = load_log(log_path, check_files=False).rig
            camera_scale = auto_camera_scale(sum(c.width_px * c.height_px for c in rig.cameras))
        scale = 1.0 if camera_scale is None else camera_scale
        return Scenario.parse(raw | {"sensors": {"camera_scale": scale}}), str(target)
    scenario = Scenario.load(target)
    if camera_scale is not None:
        sensors = Sensors.model_validate(scenario.sensors.model_dump() | {"camera_scale": camera_scale})
        scenario = scenario.model_copy(update={"sensors": sensors})
    return scenario, str(target)


class Viewer:
    def __init__(
        self,
        target: str | Path,
        save_path: str | Path = "edited_scenario.yaml",
        fps: float = 10.0,
        max_size_px: tuple[int, int] | None = None,
        camera_scale: float | None = None,
    ) -> None:
        """``max_size_px`` (width, height) bounds the window; default: the screen, less a margin.
        ``camera_scale``: the cameras' resolution factor (default: the scenario's; for a scene folder,
        what keeps the rig within ``VIEWER_PIXEL_BUDGET``)."""
        import pygame

        check_display()
        self.pg = pygame
        scenario, source = load_scenario(target, camera_scale)
        self.sim = Simulator.from_scenario(scenario, source, config=SimConfig(stop_on_collision=False))
        if self.sim.scene is None:
            raise ValueError("the viewer needs a scenario with a reconstructed scene ('scene:')")
        self.sim.set_sensors(True)
        self.agent = KeyboardAgent()
        self.save_path = Path(save_path)
        check_apart(self.save_path, scenario_inputs(Path(source), scenario, self.sim))  # S never replaces an input
        self.fps = fps
        self.selected: str | None = None
        self.paused = False
        self.running = True
        self._drag_from: np.ndarray | None = None
        self._inserted = 0
        self.status = ""
        self.panel_h = PANEL_HEIGHT_PX
        self._fps_measured = 0.0
        self._last_tick: float | None = None
        try:
            pygame.display.init()
        except pygame.error as e:
            raise NoDisplayError(f"cannot open a window: {e}") from e
        pygame.font.init()
        self.reset()
        frame = self.frame()
        if max_size_px is None:
            info = pygame.display.Info()
            max_size_px = (int(info.current_w * 0.95), int(info.current_h * 0.9)) if info.current_w > 0 else (1600, 900)
        self.panel_h = fit_panel_height(frame.shape[1], frame.shape[0], *max_size_px)
        frame = self.frame()
        self.screen = pygame.display.set_mode((frame.shape[1], frame.shape[0] + HUD_LINES * HUD_LINE_PX))
        pygame.display.set_caption(f"neurodrive viewer - {scenario.name}")
        self.font = pygame.font.Font(None, 24)

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        self.agent.reset(self.sim.agent_context())
        self.obs: Observation = self.sim.reset()

    def frame(self) -> np.ndarray:
        return compose_frame(self.sim, self.obs, self.panel_h, self.selected)

    def _bev(self) -> tuple[BevProjection, int]:
        """Projection of the bird's-eye panel and its left edge in the window."""
        width = self.screen.get_width()
        ego = self.obs.ego
        return BevProjection(ego.x_m, ego.y_m, ego.yaw_rad, BevStyle(size_px=self.panel_h)), width - self.panel_h

    def world_at(self, pos: tuple[int, int]) -> np.ndarray | None:
        proj, left = self._bev()
        if pos[0] < left or pos[1] >= self.panel_h:
            return None
        return proj.to_world(pos[0] - left + 0.5, pos[1] + 0.5)

    def pixel_of(self, xy: np.ndarray) -> tuple[int, int]:
        """Window pixel of a world point in the bird's-eye panel."""
        proj, left = self._bev()
        u, v = proj.to_px(xy)[0]
        return int(left + u), int(v)

    def pick(self, xy: np.ndarray) -> str | None:
        best, best_d = None, PICK_RADIUS_M
        for a in self.obs.actors.values():
            d = float(np.hypot(a.x_m - xy[0], a.y_m - xy[1]))
            if d < best_d:
                best, best_d = a.actor_id, d
        return best

    def _refresh(self) -> None:
        self.obs = self.sim.observe()

    # ------------------------------------------------------------------ edits

    def remove_selected(self) -> None:
        if self.selected is not None:
            self.sim.remove_actor(self.selected)
            self.status = f"removed {self.selected}"
            self.selected = None
            self._refresh()

    def insert_ahead(self, distance_m: float = 15.0) -> str:
        assets = self.sim.scene.actors
        logged = {t.actor_id for t in self.sim.log.tracks}
        source = (
            self.selected
            if self.selected in logged
            else next((a for a in sorted(assets) if a in logged and assets[a].category == "car"), sorted(logged)[0])
        )
        ego = self.obs.ego
        centre = ego.centre_xy(self.sim.params) + distance_m * np.array([np.cos(ego.yaw_rad), np.sin(ego.yaw_rad)])
        while f"inserted_{self._inserted}" in self.sim.behaviours:
            self._inserted += 1
        new_id = f"inserted_{self._inserted}"
        self.sim.insert_actor(new_id, source, float(centre[0]), float(centre[1]), ego.yaw_rad)
        self.selected = new_id
        self.status = f"inserted {new_id} (asset {source})"
        self._refresh()
        return new_id

    def save(self) -> Path:
        atomic_write_bytes(self.save_path, self.sim.scenario.dump_yaml().encode())
        self.status = f"saved {self.save_path}"
        return self.save_path

    # ------------------------------------------------------------------ events

    def handle(self, event) -> None:
        pg = self.pg
        keys = {
            pg.K_UP: "up",
            pg.K_w: "up",
            pg.K_DOWN: "down",
            pg.K_LEFT: "left",
            pg.K_a: "left",
            pg.K_RIGHT: "right",
            pg.K_d: "right",
        }
        if event.type == pg.QUIT:
            self.running = False
        elif event.type in (pg.KEYDOWN, pg.KEYUP):
            down = event.type == pg.KEYDOWN
            if event.key in keys:
                setattr(self.agent.keys, keys[event.key], down)
            elif down and event.key in (pg.K_ESCAPE, pg.K_q):
                self.running = False
            elif down and event.key in (pg.K_DELETE, pg.K_x):
                self.remove_selected()
            elif down and event.key == pg.K_i:
                self.insert_ahead()
            elif down and event.key == pg.K_s:
                self.save()
            elif down and event.key == pg.K_r:
                self.reset()
            elif down and event.key == pg.K_SPACE:
                self.paused = not self.paused
        elif event.type == pg.MOUSEBUTTONDOWN and event.button == 1:
            xy = self.world_at(event.pos)
            if xy is not None:
                self.selected = self.pick(xy)
                self._drag_from = xy if self.selected is not None else None
        elif event.type == pg.MOUSEBUTTONUP and event.button == 1 and self._drag_from is not None:
            xy = self.world_at(event.pos)
            if xy is not None and self.selected is not None and np.linalg.norm(xy - self._drag_from) > 0.3:
                d = xy - self._drag_from
                self.sim.move_actor(self.selected, float(d[0]), float(d[1]))
                self.status = f"moved {self.selected} by ({d[0]:.1f}, {d[1]:.1f}) m"
                self._refresh()
            self._drag_from = None

    def tick(self) -> None:
        """One simulation step (unless paused or over) and a redraw."""
        now = time.perf_counter()
        if self._last_tick is not None and now > self._last_tick:
            rate = 1.0 / (now - self._last_tick)
            self._fps_measured = rate if self._fps_measured == 0 else 0.8 * self._fps_measured + 0.2 * rate
        self._last_tick = now
        if not self.paused and not self.sim.done:
            self.obs, _ = self.sim.step(self.agent.act(self.obs))
            if self.sim.done:
                self.status = "episode over - R restarts"
        self.draw()

    def draw(self) -> None:
        pg = self.pg
        frame = self.frame()
        self.screen.fill((0, 0, 0))
        self.screen.blit(pg.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
        for k, (text, colour) in enumerate(self.hud_lines()):
            self.screen.blit(self.font.render(text, True, colour), (8, self.panel_h + 5 + k * HUD_LINE_PX))
        pg.display.flip()

    def hud_lines(self) -> list[tuple[str, tuple[int, int, int]]]:
        """The lines under the panels: driving state and realism, edits, key help."""
        ego = self.obs.ego
        state = (
            f"speed {ego.speed_mps * 3.6:5.1f} km/h   {self._fps_measured:4.1f} frames/s   t = {self.obs.time_s:5.1f} s"
        )
        colour = (230, 230, 230)
        conf = self.obs.sensors.confidence if self.obs.sensors is not None else None
        if conf is not None:
            state += f"   realism {conf.score:.2f} ({conf.distance_to_training_m:.1f} m from the log)"
            if conf.score < LOW_REALISM:
                state += "  - far from the recorded views: expect artefacts"
                colour = (255, 170, 60)
        if self.paused:
            state += "   PAUSED"
        edits = f"selected: {self.selected or '-'}   {self.status}"
        return [(state, colour), (edits, (200, 220, 255))] + [(line, (170, 170, 170)) for line in KEY_HELP]

    def screenshot(self, path: str | Path) -> Path:
        path = Path(path)
        self.pg.image.save(self.screen, str(path))
        return path

    def run(self, max_frames: int | None = None) -> None:
        clock = self.pg.time.Clock()
        frames = 0
        while self.running and (max_frames is None or frames < max_frames):
            for event in self.pg.event.get():
                self.handle(event)
            self.tick()
            frames += 1
            if max_frames is None:
                clock.tick(self.fps)

    def close(self) -> None:
        self.pg.display.quit()


def headless() -> None:
    """Use SDL's dummy video driver (tests, servers without a screen)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
