"""Train Stable-Baselines3 PPO on the closed-loop environment for a few thousand steps.

Usage: python examples/train_ppo.py SCENE [--steps 4096] [--out ppo_neurodrive.zip]
(SCENE: a reconstructed scene folder, e.g. demo_out/scene after `neurodrive demo`.)
"""

from __future__ import annotations

import argparse

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy

import neurodrive  # noqa: F401  (registers neurodrive/ClosedLoop-v0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scene")
    parser.add_argument("--steps", type=int, default=4096)
    parser.add_argument("--out", default="ppo_neurodrive.zip")
    args = parser.parse_args()
    sensors = {"cameras": ["front"], "lidar": True, "camera_scale": 0.5}
    env = gym.make("neurodrive/ClosedLoop-v0", scene=args.scene, duration_s=5.0, sensors=sensors)
    model = PPO("MultiInputPolicy", env, n_steps=256, batch_size=64, seed=0, device="cpu", verbose=1)
    model.learn(args.steps, progress_bar=False)
    model.save(args.out)
    mean, std = evaluate_policy(model, env, n_eval_episodes=3, deterministic=True)
    print(f"mean episode reward {mean:.1f} +- {std:.1f}; saved {args.out}")


if __name__ == "__main__":
    main()
