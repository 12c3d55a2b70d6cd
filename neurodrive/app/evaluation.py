"""Running many scenarios: local worker processes or a Ray cluster (``neurodrive eval``)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_json, check_apart, content_fingerprint

RECORDING_NAME = "episode.rrd"  # each scenario's Rerun recording, beside its metrics.json (eval --rerun)


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``eval``, raised once every worker has stopped (nothing is written after it):
    ``finished`` names the scenarios of this run whose complete result is in the output folder."""

    def __init__(self, finished: list[str]) -> None:
        super().__init__()
        self.finished = finished


class WorkerStopped(BaseException):
    """Raised inside a worker's running scenario when the parent stops the workers (Ctrl-C)."""


_RUNNING_SCENARIO = False  # in a worker process: is a scenario running?
_STOPPED = False  # in a worker process: has the parent asked it to stop?


def _worker_init() -> None:
    """Worker processes leave Ctrl-C to the parent, which stops them with SIGTERM (``_on_stop``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_stop)


def _on_stop(signum: int, frame: object) -> None:
    """A running scenario is interrupted (it removes its partial files); every scenario handed to this
    worker afterwards returns at once without running. The worker itself exits when the pool shuts
    down, as usual."""
    global _STOPPED
    _STOPPED = True
    if _RUNNING_SCENARIO:
        raise WorkerStopped


def _run_one(scenario: str, agent: str, out: str, video: bool, rerun: bool = False) -> dict:
    from neurodrive.app.replay import replay

    global _RUNNING_SCENARIO
    stopped = {"scenario": Path(scenario).stem, "agent": agent, "error": "stopped (eval was interrupted)"}
    if _STOPPED:
        return stopped
    _RUNNING_SCENARIO = True
    try:
        recording = Path(out) / RECORDING_NAME
        result = replay(scenario, agent, out, video=video, overwrite=True, rerun_path=recording if rerun else None)
        if not rerun:
            recording.unlink(missing_ok=True)  # an old recording never stands beside new metrics
        return result
    except WorkerStopped:
        return stopped  # the scenario's partial files are gone
    except Exception as e:  # noqa: BLE001 - one scenario's failure is recorded; the others go on
        kind = "" if isinstance(e, (DataError, KeyError, ValueError)) else f"{type(e).__name__}: "
        return {"scenario": Path(scenario).stem, "agent": agent, "error": f"{kind}{e}"}
    finally:
        _RUNNING_SCENARIO = False


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and a fingerprint of its source (a changed simulator invalidates results)."""
    import neurodrive

    root = Path(neurodrive.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".cpp") and path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"{neurodrive.__version__}+{digest.hexdigest()[:12]}"


def run_key(scenario_path: str | Path, agent: str, video: bool, rerun: bool = False) -> dict:
    """What a finished result depends on: the agent, the scenario file's content, the content of the
    scene and of the log it uses (every file: a changed tracks.npz counts), the code version and
    whether video (and a Rerun recording) was asked for. A result is reused only when its stored key
    equals this one."""
    path = Path(scenario_path)
    key = {
        "agent": agent,
        "scenario_sha256": content_fingerprint(path),
        "code_version": code_version(),
        "video": video,
    }
    if rerun:
        key["rerun"] = True
    from neurodrive.scenarios.scenario import Scenario
    from neurodrive.scene.meta import SceneMeta

    try:
        scenario = Scenario.load(path)
        scene = scenario.resolve_path(scenario.scene) if scenario.scene is not None else None
        if scenario.log is not None:
            log = scenario.resolve_path(scenario.log)
        else:  # the scene's source log, as the simulator finds it
            log = Path(SceneMeta.read(scene).log.path) if scene is not None else None
    except (DataError, KeyError, TypeError):
        return key  # a broken scenario fails when it runs; its key is its bytes
    if scene is not None and (scene / "scene.json").is_file():
        key["scene_sha256"] = content_fingerprint(scene, skip=("checkpoints",))
    if log is not None and (log / "log.json").is_file():
        key["log_sha256"] = content_fingerprint(log)
    return key


def _finished(metrics_path: Path, key: dict) -> dict | None:
    """The stored result when it is complete and was made with ``key``, else None."""
    try:
        result = json.loads(metrics_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) and result.get("run_key") == key and "error" not in result else None


def _summary(results: dict[str, dict]) -> dict:
    ok = [r for r in results.values() if "error" not in r]
    return {
        "scenarios": len(results),
        "failed": sorted(k for k, r in results.items() if "error" in r),
        "mean_nuplan_score": float(np.mean([r["nuplan_score"] for r in ok])) if ok else None,
        "mean_neuroncap_score": float(np.mean([r["neuroncap_score"] for r in ok])) if ok else None,
        "collision_rate": float(np.mean([bool(r["collisions"]) for r in ok])) if ok else None,
        "results": results,
    }


def evaluate_scenarios(
    folder: str | Path,
    agent: str,
    out_dir: str | Path,
    workers: int = 1,
    ray_address: str | None = None,
    video: bool = False,
    overwrite: bool = False,
    rerun: bool = False,
    on_done: Callable[[str, dict], None] | None = None,
    on_reuse: Callable[[list[str], list[str]], None] | None = None,
) -> dict:
    """Runs every ``*.yaml`` scenario of ``folder``; writes OUT/<name>/... and OUT/summary.json.

    A scenario's finished OUT/<name>/metrics.json is reused (resume after an interruption) when it
    was made with the same agent, scenario content, scene and code version (``run_key``); stale
    results are run again. ``overwrite`` runs everything again. ``on_reuse(reused, stale)`` is told
    which. The summary lists both. ``rerun``: each scenario also writes OUT/<name>/episode.rrd.
    """
    folder, out = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise DataError(
            folder,
            None,
            "is a file, expected a folder of scenario files" if folder.exists() else "folder does not exist",
        )
    if out.exists() and not out.is_dir():
        raise DataError(out, None, "is a file, expected an output folder")
    check_apart(out, [("the scenario folder", folder)])
    if rerun:
        from neurodrive.interop.rerun_recording import require_rerun

        require_rerun()  # one error now, not one per scenario
    scenarios = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not scenarios:
        raise DataError(folder, None, "no scenario files (*.yaml) in this folder")
    results: dict[str, dict] = {}
    reused: list[str] = []
    stale: list[str] = []
    todo = []
    for path in scenarios:
        done = out / path.stem / "metrics.json"
        previous = None if overwrite else _finished(done, run_key(path, agent, video, rerun))
        if previous is not None:
            results[path.stem] = previous
            reused.append(path.stem)
        else:
            if done.is_file() and not overwrite:
                stale.append(path.stem)  # made with another agent, scenario content or code version
            todo.append(path)
    if on_reuse and (reused or stale):
        on_reuse(reused, stale)
    jobs = [(str(p), agent, str(out / p.stem), video, rerun) for p in todo]

    def finish(name: str, result: dict) -> None:
        results[name] = result
        if on_done:
            on_done(name, result)

    try:
        if ray_address is not None:
            _run_on_ray(jobs, ray_address, workers, finish)
        elif workers <= 1:
            for job in jobs:
                finish(Path(job[0]).stem, _run_one(*job))
        else:
            _run_in_processes(jobs, workers, finish)
    except KeyboardInterrupt as e:  # every worker has stopped: what is on disk now is final
        keys = {Path(job[0]).stem: run_key(job[0], agent, video, rerun) for job in jobs}
        kept = [name for name, key in keys.items() if _finished(out / name / "metrics.json", key) is not None]
        raise EvalInterrupted(kept) from e
    summary = _summary(dict(sorted(results.items())))
    summary["reused"] = reused
    summary["rerun_stale"] = stale
    atomic_write_json(out / "summary.json", summary)
    return summary


def _run_in_processes(jobs: list[tuple], workers: int, finish: Callable[[str, dict], None]) -> None:
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
    futures: dict = {}
    try:
        futures = {pool.submit(_run_one, *job): Path(job[0]).stem for job in jobs}
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                result = fut.result()
            except Exception as e:  # noqa: BLE001 - a crashed worker fails its scenario, not the run
                result = {"scenario": name, "error": f"worker failed: {type(e).__name__}: {e}"}
            finish(name, result)
    except BaseException:  # Ctrl-C: queued scenarios are cancelled, running ones stopped and cleaned up
        for fut in futures:
            fut.cancel()
        for proc in list((getattr(pool, "_processes", None) or {}).values()):  # the executor's own table
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)  # _on_stop
        pool.shutdown(wait=True, cancel_futures=True)  # when this returns no scenario runs or will start
        raise
    pool.shutdown()


def _run_on_ray(jobs: list[tuple], ray_address: str, workers: int, finish: Callable[[str, dict], None]) -> None:
    try:
        import ray
    except ImportError as e:
        raise RuntimeError("--ray-address needs Ray: pip install 'neurodrive[ray]'") from e
    started_here = not ray.is_initialized()
    if ray_address == "local":  # a Ray instance on this machine (no cluster needed)
        ray.init(num_cpus=max(1, workers), include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(address=ray_address, ignore_reinit_error=True)
    remote = ray.remote(_run_one)
    refs = {remote.remote(*job): Path(job[0]).stem for job in jobs}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            name = refs[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001 - a failed task fails its scenario, not the run
                result = {"scenario": name, "error": f"task failed: {type(e).__name__}: {e}"}
            finish(name, result)
    except BaseException:
        for ref in pending:  # Ctrl-C: cancel what has not finished (a running task is interrupted and
            ray.cancel(ref)  # removes its partial files) and wait until every task has ended
        with contextlib.suppress(Exception):
            ray.wait(pending, num_returns=len(pending), timeout=120)
        raise
    finally:
        if started_here:
            ray.shutdown()
