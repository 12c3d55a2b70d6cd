"""Running many scenarios: local worker processes or a Ray cluster (``neurodrive eval``)."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from neurodrive.errors import DataError
from neurodrive.io_utils import atomic_write_json


def _run_one(scenario: str, agent: str, out: str, video: bool) -> dict:
    from neurodrive.replay import replay

    try:
        return replay(scenario, agent, out, video=video)
    except (DataError, KeyError, ValueError) as e:  # bad input: reported, the other scenarios go on
        return {"scenario": Path(scenario).stem, "agent": agent, "error": str(e)}


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
    on_done: Callable[[str, dict], None] | None = None,
) -> dict:
    """Runs every ``*.yaml`` scenario of ``folder``; writes OUT/<name>/... and OUT/summary.json.

    Scenarios that already have OUT/<name>/metrics.json are kept (resume after an interruption)
    unless ``overwrite``.
    """
    folder, out = Path(folder), Path(out_dir)
    scenarios = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
    if not scenarios:
        raise DataError(folder, None, "no scenario files (*.yaml) in this folder")
    results: dict[str, dict] = {}
    todo = []
    for path in scenarios:
        done = out / path.stem / "metrics.json"
        if done.is_file() and not overwrite:
            results[path.stem] = json.loads(done.read_text())
        else:
            todo.append(path)
    jobs = [(str(p), agent, str(out / p.stem), video) for p in todo]
    if ray_address is not None:
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
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            name = refs[ready[0]]
            results[name] = ray.get(ready[0])
            if on_done:
                on_done(name, results[name])
        if started_here:
            ray.shutdown()
    elif workers <= 1:
        for job in jobs:
            name = Path(job[0]).stem
            results[name] = _run_one(*job)
            if on_done:
                on_done(name, results[name])
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, *job): Path(job[0]).stem for job in jobs}
            for fut in as_completed(futures):
                name = futures[fut]
                results[name] = fut.result()
                if on_done:
                    on_done(name, results[name])
    summary = _summary(dict(sorted(results.items())))
    atomic_write_json(out / "summary.json", summary)
    return summary
