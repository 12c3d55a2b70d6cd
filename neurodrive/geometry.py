"""Rigid transforms. Poses are 4x4 homogeneous matrices ``T_a_b`` mapping points in frame b to frame a.

Conventions: world and ego frames are x forward / y left / z up (m); camera frames follow OpenCV
(x right, y down, z forward).
"""

from __future__ import annotations

import math

import numpy as np

# Rotation taking OpenCV camera axes to a forward-looking x-forward/y-left/z-up body frame.
R_BODY_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_z(yaw_rad: float) -> np.ndarray:
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(pitch_rad: float) -> np.ndarray:
    c, s = np.cos(pitch_rad), np.sin(pitch_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def make_pose(translation_m: np.ndarray | list[float], rotation: np.ndarray | None = None) -> np.ndarray:
    """4x4 pose from a translation (3,) and an optional rotation matrix (3, 3)."""
    pose = np.eye(4)
    if rotation is not None:
        pose[:3, :3] = rotation
    pose[:3, 3] = np.asarray(translation_m, dtype=float)
    return pose


def pose_xyz_yaw(x_m: float, y_m: float, z_m: float, yaw_rad: float) -> np.ndarray:
    return make_pose([x_m, y_m, z_m], rot_z(yaw_rad))


def yaw_of(pose: np.ndarray) -> np.ndarray | float:
    """Heading (rad) of the x axis of pose(s) (..., 4, 4) in the xy plane."""
    return np.arctan2(pose[..., 1, 0], pose[..., 0, 0])


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of rigid pose(s) (..., 4, 4)."""
    rot = pose[..., :3, :3]
    inv = np.zeros_like(pose)
    rot_t = np.swapaxes(rot, -1, -2)
    inv[..., :3, :3] = rot_t
    inv[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, pose[..., :3, 3])
    inv[..., 3, 3] = 1.0
    return inv


def transform_points(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 pose to points (N, 3)."""
    return points @ pose[:3, :3].T + pose[:3, 3]


def rotate_vectors(pose: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return vectors @ pose[:3, :3].T


def rigid_mask(poses: np.ndarray, atol: float = 1e-4) -> np.ndarray:
    """(...) bool: which of the 4x4 ``poses`` (..., 4, 4) are finite rigid transforms (orthonormal
    rotation, det +1, last row 0 0 0 1; tolerances as ``np.allclose`` with ``atol``)."""
    poses = np.asarray(poses, float)
    finite = np.all(np.isfinite(poses), axis=(-2, -1))
    safe = np.where(finite[..., None, None], poses, 0.0)
    rot = safe[..., :3, :3]
    eye = np.eye(3)
    orthonormal = np.all(np.abs(rot @ np.swapaxes(rot, -1, -2) - eye) <= atol + 1e-5 * eye, axis=(-2, -1))
    last = np.array([0.0, 0.0, 0.0, 1.0])
    bottom = np.all(np.abs(safe[..., 3, :] - last) <= atol + 1e-5 * last, axis=-1)
    return finite & orthonormal & (np.abs(np.linalg.det(rot) - 1.0) < atol) & bottom


def is_rigid(pose: np.ndarray, atol: float = 1e-4) -> bool:
    """True when ``pose`` is a finite 4x4 rigid transform (orthonormal rotation, det +1)."""
    return np.shape(pose) == (4, 4) and bool(rigid_mask(pose, atol))


def points_in_box(points_box: np.ndarray, size_m: np.ndarray, margin_m: float = 0.0) -> np.ndarray:
    """Mask (N,) of points (N, 3), given in a box's own centred frame, inside the box of size (3,)."""
    half = np.asarray(size_m) / 2.0 + margin_m
    return np.all(np.abs(points_box) <= half, axis=1)


# the 12 edges of a box as pairs of box_corners indices
BOX_EDGES = ((0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7))


def box_corners(pose: np.ndarray, size_m: np.ndarray) -> np.ndarray:
    """(8, 3) world corners of a box (corner k has signs of bits 2, 1, 0 on x, y, z)."""
    signs = np.array([[(k >> 2) & 1, (k >> 1) & 1, k & 1] for k in range(8)]) * 2.0 - 1.0
    return transform_points(pose, signs * np.asarray(size_m) / 2.0)


def check_pose(pose: np.ndarray, name: str = "pose") -> None:
    """One ValueError naming ``name`` unless ``pose`` is a finite rigid 4x4 transform."""
    if np.shape(pose) != (4, 4) or not np.all(np.isfinite(pose)):
        raise ValueError(
            f"{name}: expected a finite 4x4 transform (got NaN / infinite values or shape {np.shape(pose)})"
        )
    if not is_rigid(np.asarray(pose, float)):
        raise ValueError(f"{name}: not a rigid transform")


def wrap_angle(angle_rad):
    """Angle(s) wrapped to [-pi, pi) (a float stays a float: this runs on every collision sub-step)."""
    if isinstance(angle_rad, float | int):
        return (angle_rad + math.pi) % (2 * math.pi) - math.pi
    return (np.asarray(angle_rad) + np.pi) % (2 * np.pi) - np.pi


def to_frame_xy(xy_m: np.ndarray, origin_x_m: float, origin_y_m: float, yaw_rad: float) -> np.ndarray:
    """World points (..., 2) in the frame at (origin, yaw): x forward, y left."""
    rel = np.asarray(xy_m, float) - [origin_x_m, origin_y_m]
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.stack([rel[..., 0] * c + rel[..., 1] * s, -rel[..., 0] * s + rel[..., 1] * c], axis=-1)


def from_frame_xy(xy_local_m: np.ndarray, origin_x_m: float, origin_y_m: float, yaw_rad: float) -> np.ndarray:
    """Points (..., 2) given in the frame at (origin, yaw) back in the world."""
    p = np.asarray(xy_local_m, float)
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.stack([origin_x_m + p[..., 0] * c - p[..., 1] * s, origin_y_m + p[..., 0] * s + p[..., 1] * c], axis=-1)


def pose_from_quaternion(wxyz: np.ndarray | list[float], translation_m: np.ndarray | list[float]) -> np.ndarray:
    """4x4 pose from a unit quaternion (w, x, y, z), as nuScenes, AV2 and DGP store them, and a translation."""
    return poses_from_quaternions(np.asarray(wxyz, float)[None], np.asarray(translation_m, float)[None])[0]


def poses_from_quaternions(wxyz: np.ndarray, translation_m: np.ndarray) -> np.ndarray:
    """(K, 4, 4) poses from (K, 4) quaternions (w, x, y, z; normalised here) and (K, 3) translations."""
    from scipy.spatial.transform import Rotation

    wxyz = np.asarray(wxyz, float)
    out = np.repeat(np.eye(4)[None], len(wxyz), axis=0)
    out[:, :3, :3] = Rotation.from_quat(wxyz[:, [1, 2, 3, 0]]).as_matrix()
    out[:, :3, 3] = translation_m
    return out


def interpolate_poses(times_s: np.ndarray, poses: np.ndarray, query_s: np.ndarray | float) -> np.ndarray:
    """Poses at ``query_s``: translation linear and rotation slerped between the two nearest of the
    sorted ``times_s`` (K,) / ``poses`` (K, 4, 4); clamped to the first / last pose outside them."""
    from scipy.spatial.transform import Rotation, Slerp

    q = np.atleast_1d(np.asarray(query_s, float))
    if len(times_s) == 1:
        out = np.repeat(poses[:1], len(q), axis=0)
    else:
        t = np.clip(q, times_s[0], times_s[-1])
        out = np.repeat(np.eye(4)[None], len(q), axis=0)
        out[:, :3, :3] = Slerp(times_s, Rotation.from_matrix(poses[:, :3, :3]))(t).as_matrix()
        for k in range(3):
            out[:, k, 3] = np.interp(t, times_s, poses[:, k, 3])
    return out if np.ndim(query_s) else out[0]
