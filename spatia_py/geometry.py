"""Camera conventions, cameras, camera paths and pose helpers — the one place they are defined.

Conventions (see DESIGN.md):

- Camera frame is OpenCV: x right, y down, z forward. Depth is metric z along the optical axis.
- ``T_a_b`` is the 4x4 rigid transform taking points expressed in frame ``b`` into frame ``a``.
  A camera's pose is ``T_world_cam`` (camera-to-world); ``T_cam_world`` is its inverse.
- Intrinsics ``K`` are in pixels; pixel ``(u, v)`` = (column, row) and integer coordinates are
  pixel *centres*, so the centre of the top-left pixel is ``(0, 0)``.
- Everything here is numpy float64 unless stated; the renderer converts to torch itself.

File boundaries convert other conventions with a comment at the conversion (COLMAP's
``cam_from_world`` is our ``T_cam_world``; nerfstudio's ``transform_matrix`` is an OpenGL-axes
camera-to-world).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "GeometryError",
    "Camera",
    "CameraPath",
    "intrinsics_from_fov",
    "validate_pose",
    "validate_intrinsics",
    "invert_pose",
    "compose",
    "transform_points",
    "project",
    "unproject_depth",
    "look_at",
    "rotation_angle_deg",
    "pose_distance",
    "so3_exp",
    "so3_log",
    "se3_exp",
    "interpolate_pose",
    "umeyama",
    "similarity_from_poses",
    "apply_similarity",
    "apply_similarity_to_poses",
    "orbit_path",
    "dolly_path",
    "look_around_path",
    "loop_path",
    "load_path",
    "save_path",
    "build_path",
]


class GeometryError(ValueError):
    """Invalid camera, pose or path; the message names the bad value and how to fix it."""


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def validate_pose(T: np.ndarray, name: str = "T_world_cam", tol: float = 1e-3) -> np.ndarray:
    """Check a 4x4 rigid transform and return it as float64.

    Raises:
        GeometryError: not 4x4, non-finite, last row not ``[0, 0, 0, 1]``, or the rotation block
            is not orthonormal with determinant +1 (within ``tol``).
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise GeometryError(f"{name} must be a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise GeometryError(f"{name} contains non-finite values (NaN/inf): {T.tolist()}")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise GeometryError(f"{name} last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    err = np.abs(R @ R.T - np.eye(3)).max()
    det = np.linalg.det(R)
    if err > tol or abs(det - 1.0) > tol:
        raise GeometryError(
            f"{name} is not rigid: its rotation block has |R R^T - I| = {err:.3g} and det = {det:.4f} "
            "(expected an orthonormal rotation with det +1; re-orthonormalise it, e.g. via SVD, "
            "and make sure it is camera-to-world in OpenCV axes)"
        )
    return T


def validate_intrinsics(K: np.ndarray, width: int, height: int, name: str = "K") -> np.ndarray:
    """Check a pinhole intrinsic matrix and image size; return ``K`` as float64."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise GeometryError(f"{name} must be a 3x3 matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise GeometryError(f"{name} contains non-finite values: {K.tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise GeometryError(
            f"{name} focal lengths must be positive pixels, got fx={K[0, 0]}, fy={K[1, 1]}"
        )
    if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
        raise GeometryError(f"{name} must have the form [[fx,s,cx],[0,fy,cy],[0,0,1]], got {K.tolist()}")
    if int(width) <= 0 or int(height) <= 0 or int(width) != width or int(height) != height:
        raise GeometryError(f"image size must be positive integers, got width={width}, height={height}")
    return K


# --------------------------------------------------------------------------------------------
# cameras
# --------------------------------------------------------------------------------------------


@dataclass
class Camera:
    """A pinhole camera in OpenCV axes.

    Attributes:
        K: ``(3, 3)`` intrinsics in pixels.
        width: image width in pixels.
        height: image height in pixels.
        T_world_cam: ``(4, 4)`` camera-to-world rigid transform.
    """

    K: np.ndarray
    width: int
    height: int
    T_world_cam: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        self.width = int(self.width) if float(self.width).is_integer() else self.width
        self.height = int(self.height) if float(self.height).is_integer() else self.height
        self.K = validate_intrinsics(self.K, self.width, self.height)
        self.T_world_cam = validate_pose(self.T_world_cam)

    @property
    def T_cam_world(self) -> np.ndarray:
        """``(4, 4)`` world-to-camera transform."""
        return invert_pose(self.T_world_cam)

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` camera centre in world coordinates."""
        return self.T_world_cam[:3, 3].copy()

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    def with_pose(self, T_world_cam: np.ndarray) -> Camera:
        """The same intrinsics at another pose."""
        return Camera(self.K.copy(), self.width, self.height, np.asarray(T_world_cam, dtype=np.float64))

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image resized by ``factor`` (pixel centres stay consistent)."""
        width = max(1, int(round(self.width * factor)))
        height = max(1, int(round(self.height * factor)))
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[1, 1] *= sy
        # Pixel centres: u_new + 0.5 = s (u_old + 0.5).
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return Camera(K, width, height, self.T_world_cam.copy())

    def to_dict(self) -> dict:
        return {
            "K": self.K.tolist(),
            "width": int(self.width),
            "height": int(self.height),
            "T_world_cam": self.T_world_cam.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "camera") -> Camera:
        """Build from the path-file entry ``{"K", "width", "height", "T_world_cam"}``."""
        missing = [k for k in ("K", "width", "height", "T_world_cam") if k not in d]
        if missing:
            raise GeometryError(f"{where}: missing key(s) {missing}; each camera needs K, width, height, T_world_cam")
        try:
            return cls(np.asarray(d["K"], dtype=np.float64), d["width"], d["height"],
                       np.asarray(d["T_world_cam"], dtype=np.float64))
        except GeometryError as e:
            raise GeometryError(f"{where}: {e}") from None
        except (TypeError, ValueError) as e:
            raise GeometryError(f"{where}: could not read numbers ({e})") from None


@dataclass
class CameraPath:
    """An ordered sequence of cameras played back at ``fps``."""

    cameras: list[Camera]
    fps: float = 24.0

    def __post_init__(self) -> None:
        if self.fps <= 0 or not math.isfinite(self.fps):
            raise GeometryError(f"fps must be a positive number, got {self.fps}")

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return CameraPath(self.cameras[i], self.fps)
        return self.cameras[i]

    def __iter__(self):
        return iter(self.cameras)

    @property
    def T_world_cam(self) -> np.ndarray:
        """``(N, 4, 4)`` stacked poses."""
        return np.stack([c.T_world_cam for c in self.cameras]) if self.cameras else np.zeros((0, 4, 4))

    @property
    def centers(self) -> np.ndarray:
        """``(N, 3)`` camera centres."""
        return self.T_world_cam[:, :3, 3]

    def length_m(self) -> float:
        """Total travelled distance of the camera centres in metres."""
        c = self.centers
        return float(np.linalg.norm(np.diff(c, axis=0), axis=1).sum()) if len(c) > 1 else 0.0

    def to_dict(self) -> dict:
        return {"fps": self.fps, "cameras": [c.to_dict() for c in self.cameras]}

    @classmethod
    def from_dict(cls, d: dict, where: str = "path") -> CameraPath:
        if not isinstance(d, dict) or "cameras" not in d:
            raise GeometryError(f'{where}: expected an object {{"fps": 24, "cameras": [...]}}')
        cams = d["cameras"]
        if not isinstance(cams, list) or not cams:
            raise GeometryError(f"{where}: 'cameras' must be a non-empty list")
        return cls([Camera.from_dict(c, f"{where}: camera {i}") for i, c in enumerate(cams)],
                   float(d.get("fps", 24.0)))


# --------------------------------------------------------------------------------------------
# pose algebra
# --------------------------------------------------------------------------------------------


def invert_pose(T_a_b: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``(..., 4, 4)`` transform: returns ``T_b_a``."""
    T_a_b = np.asarray(T_a_b, dtype=np.float64)
    R = T_a_b[..., :3, :3]
    t = T_a_b[..., :3, 3:]
    out = np.zeros_like(T_a_b)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def compose(*Ts: np.ndarray) -> np.ndarray:
    """Chain transforms left to right: ``compose(T_a_b, T_b_c) = T_a_c``."""
    out = np.eye(4)
    for T in Ts:
        out = out @ T
    return out


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Apply ``T_a_b (4, 4)`` to ``points_b (..., 3)``; returns ``points_a (..., 3)``."""
    points_b = np.asarray(points_b)
    return points_b @ T_a_b[:3, :3].T + T_a_b[:3, 3]


def project(points_world: np.ndarray, K: np.ndarray, T_cam_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera.

    Args:
        points_world: ``(N, 3)``.
        K: ``(3, 3)`` intrinsics.
        T_cam_world: ``(4, 4)`` world-to-camera.

    Returns:
        ``uv (N, 2)`` pixel coordinates (column, row; integer = pixel centre) and ``z (N,)`` depth.
        Points with ``z <= 0`` get ``uv = nan``.
    """
    p = transform_points(T_cam_world, points_world)
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = p @ K.T
        uv = uvw[:, :2] / uvw[:, 2:3]
    uv[z <= 0] = np.nan
    return uv, z


def unproject_depth(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """Lift a depth map to world points.

    Args:
        depth: ``(H, W)`` metric z-depth (0 = empty; those pixels are lifted to the camera centre).
        K: ``(3, 3)``.
        T_world_cam: ``(4, 4)``.

    Returns:
        ``(H, W, 3)`` world coordinates of each pixel centre.
    """
    H, W = depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    Kinv = np.linalg.inv(K)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ Kinv.T  # z = 1 rays
    p_cam = rays * depth[..., None]
    return transform_points(T_world_cam, p_cam)


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """``T_world_cam`` of an OpenCV camera at ``eye`` looking at ``target``.

    ``up`` is the world up direction; the camera's y axis (down in the image) points against it.
    """
    eye = np.asarray(eye, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    z = target - eye
    n = np.linalg.norm(z)
    if n < 1e-12:
        raise GeometryError(f"look_at: eye and target coincide at {eye.tolist()}")
    z /= n
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise GeometryError("look_at: viewing direction is parallel to 'up'; choose another up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def _hat(w: np.ndarray) -> np.ndarray:
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]], dtype=np.float64)


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rotation matrix from an axis-angle vector ``w (3,)`` (radians)."""
    w = np.asarray(w, dtype=np.float64)
    th = np.linalg.norm(w)
    W = _hat(w)
    if th < 1e-10:
        return np.eye(3) + W
    return np.eye(3) + math.sin(th) / th * W + (1 - math.cos(th)) / th**2 * (W @ W)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector ``(3,)`` of a rotation matrix."""
    c = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    th = math.acos(c)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if th < 1e-8:
        return v / 2
    if math.pi - th < 1e-5:
        # Near pi: axis from the symmetric part.
        A = (R + np.eye(3)) / 2
        axis = np.sqrt(np.clip(np.diag(A), 0, None))
        i = int(np.argmax(axis))
        axis = A[i] / max(axis[i], 1e-12)
        axis /= np.linalg.norm(axis)
        return axis * th
    return v * th / (2 * math.sin(th))


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """4x4 transform from a twist ``xi = (w, t)`` (rotation first), with the translation applied
    directly (not the full SE(3) left Jacobian; adequate for small perturbations)."""
    xi = np.asarray(xi, dtype=np.float64)
    T = np.eye(4)
    T[:3, :3] = so3_exp(xi[:3])
    T[:3, 3] = xi[3:]
    return T


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle in degrees of the relative rotation between two ``(3, 3)`` rotations."""
    c = (np.trace(R_a.T @ R_b) - 1) / 2
    return float(np.degrees(math.acos(float(np.clip(c, -1.0, 1.0)))))


def pose_distance(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """``(translation distance in m, rotation angle in degrees)`` between two poses."""
    return (float(np.linalg.norm(T_a[:3, 3] - T_b[:3, 3])),
            rotation_angle_deg(T_a[:3, :3], T_b[:3, :3]))


def interpolate_pose(T_a: np.ndarray, T_b: np.ndarray, s: float) -> np.ndarray:
    """Geodesic interpolation (slerp rotation, linear translation); ``s`` in [0, 1]."""
    R = T_a[:3, :3] @ so3_exp(s * so3_log(T_a[:3, :3].T @ T_b[:3, :3]))
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = (1 - s) * T_a[:3, 3] + s * T_b[:3, 3]
    return T


def _nearest_rotation(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rotation nearest ``M (3, 3)`` in Frobenius norm: ``(R, singular values, D)`` with
    ``R = U D V^T`` and ``D = diag(1, 1, +-1)`` making ``det R = +1``."""
    U, S, Vt = np.linalg.svd(M)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    return U @ D @ Vt, S, D


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ s R src + t`` (Umeyama 1991).

    Args:
        src: ``(N, 3)`` points, e.g. camera centres of a reconstruction in its own frame.
        dst: ``(N, 3)`` corresponding points, e.g. ground-truth camera centres in the world.
        with_scale: estimate ``s`` (else ``s = 1``, a rigid alignment).

    Returns:
        ``(s, R (3, 3), t (3,))``.

    Raises:
        ValueError: fewer than 3 points, mismatched shapes or a degenerate (collinear) ``src``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama: src and dst must both be (N, 3), got {src.shape} and {dst.shape}")
    if len(src) < 3:
        raise ValueError(f"umeyama: needs at least 3 correspondences, got {len(src)}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    var_s = float((a**2).sum() / len(src))
    if var_s <= 1e-18:
        raise ValueError("umeyama: source points coincide; a similarity is undetermined")
    R, S, D = _nearest_rotation(b.T @ a / len(src))
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale else 1.0
    return s, R, mu_d - s * R @ mu_s


def apply_similarity(s: float, R: np.ndarray, t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``s R p + t`` for points ``(N, 3)`` (float64)."""
    return s * np.asarray(points, dtype=np.float64) @ R.T + t


def apply_similarity_to_poses(s: float, R: np.ndarray, t: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """Camera poses ``(N, 4, 4)`` moved by ``x -> s R x + t``: rotation ``R @ R_i``, centre
    ``s R c_i + t`` (a new float64 array; the cameras' own frames are not scaled)."""
    T = np.array(T_world_cam, dtype=np.float64)
    T[..., :3, 3] = apply_similarity(s, R, t, T[..., :3, 3])
    T[..., :3, :3] = R @ T[..., :3, :3]
    return T


def similarity_from_poses(T_src: np.ndarray, T_dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``x -> s R x + t`` that best maps cameras ``T_src`` onto ``T_dst``, rotation first.

    ``R`` is the chordal L2 mean of ``R_dst R_src^T``; then ``s`` and ``t`` fit the camera centres
    in least squares with ``R`` fixed. The orientations fix the rotation far more tightly than the
    centres of a short clip, which lie almost on a line and leave a rotation fitted to them alone
    (:func:`umeyama`) undetermined about that line.

    Args:
        T_src, T_dst: ``(N, 4, 4)`` camera-to-world poses of the same cameras, ``N >= 2``.

    Returns:
        ``(s, R (3, 3), t (3,))``: the moved pose has rotation ``R @ R_src`` and centre ``s R c_src + t``.

    Raises:
        GeometryError: mismatched shapes, fewer than 2 poses, or coinciding source centres (the
            scale is then undetermined).
    """
    T_src = np.asarray(T_src, np.float64)
    T_dst = np.asarray(T_dst, np.float64)
    if T_src.shape != T_dst.shape or T_src.ndim != 3 or T_src.shape[1:] != (4, 4) or len(T_src) < 2:
        raise GeometryError(
            f"similarity_from_poses: need two (N, 4, 4) pose arrays with N >= 2, got {T_src.shape} and {T_dst.shape}"
        )
    R = _nearest_rotation(np.einsum("nij,nkj->ik", T_dst[:, :3, :3], T_src[:, :3, :3]))[0]
    c_src = T_src[:, :3, 3] @ R.T
    c_dst = T_dst[:, :3, 3]
    a, b = c_src - c_src.mean(0), c_dst - c_dst.mean(0)
    aa = float((a * a).sum())
    if aa < 1e-12:
        raise GeometryError("similarity_from_poses: the source camera centres coincide; the scale is undetermined")
    s = float((a * b).sum() / aa)
    return s, R, c_dst.mean(0) - s * c_src.mean(0)


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """Square-pixel ``K`` with horizontal field of view ``fov_x_deg`` and centred principal point."""
    if not (0 < fov_x_deg < 180):
        raise GeometryError(f"fov_x_deg must be in (0, 180), got {fov_x_deg}")
    f = 0.5 * width / math.tan(math.radians(fov_x_deg) / 2)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# path builders — all return CameraPath in OpenCV axes with world z up
# --------------------------------------------------------------------------------------------


def _path(poses: Iterable[np.ndarray], width: int, height: int, fov_x_deg: float, fps: float) -> CameraPath:
    K = intrinsics_from_fov(width, height, fov_x_deg)
    return CameraPath([Camera(K, width, height, T) for T in poses], fps)


def orbit_path(center: Sequence[float], radius: float, height: float, n_frames: int, *, width: int, height_px: int,
               fov_x_deg: float = 70.0, fps: float = 24.0, degrees: float = 360.0,
               start_deg: float = 0.0, look_at_height: float | None = None) -> CameraPath:
    """Cameras on a horizontal circle around ``center``, looking at it.

    ``degrees`` is the swept angle; a full 360 revisits the first pose at the end.
    """
    c = np.asarray(center, dtype=np.float64)
    tgt = c.copy()
    if look_at_height is not None:
        tgt[2] = look_at_height
    poses = []
    for i in range(n_frames):
        a = math.radians(start_deg + degrees * i / max(n_frames - 1, 1))
        eye = c + np.array([radius * math.cos(a), radius * math.sin(a), 0.0])
        eye[2] = height
        poses.append(look_at(eye, tgt))
    return _path(poses, width, height_px, fov_x_deg, fps)


def dolly_path(start: Sequence[float], end: Sequence[float], target: Sequence[float], n_frames: int, *,
               width: int, height_px: int, fov_x_deg: float = 70.0, fps: float = 24.0) -> CameraPath:
    """Straight move from ``start`` to ``end`` while looking at ``target``."""
    s, e = np.asarray(start, float), np.asarray(end, float)
    poses = [look_at(s + (e - s) * i / max(n_frames - 1, 1), target) for i in range(n_frames)]
    return _path(poses, width, height_px, fov_x_deg, fps)


def look_around_path(eye: Sequence[float], n_frames: int, *, width: int, height_px: int, fov_x_deg: float = 70.0,
                     fps: float = 24.0, yaw_start_deg: float = 0.0, yaw_span_deg: float = 360.0,
                     pitch_deg: float = 0.0) -> CameraPath:
    """Camera standing at ``eye`` and panning (yaw) by ``yaw_span_deg``."""
    eye = np.asarray(eye, dtype=np.float64)
    poses = []
    for i in range(n_frames):
        yaw = math.radians(yaw_start_deg + yaw_span_deg * i / max(n_frames - 1, 1))
        p = math.radians(pitch_deg)
        d = np.array([math.cos(yaw) * math.cos(p), math.sin(yaw) * math.cos(p), math.sin(p)])
        poses.append(look_at(eye, eye + d))
    return _path(poses, width, height_px, fov_x_deg, fps)


def loop_path(waypoints: Sequence[Sequence[float]], n_frames: int, *, width: int, height_px: int,
              fov_x_deg: float = 70.0, fps: float = 24.0, look_ahead: float = 1.0,
              target: Sequence[float] | None = None) -> CameraPath:
    """Out along ``waypoints`` and back the same way, ending exactly at the start pose.

    The outward half visits waypoints in order, the return half retraces them in reverse, so
    frame ``i`` and frame ``n_frames - 1 - i`` share a pose (the revisit pairs). Cameras look at
    ``target`` if given, else along the outward direction of travel (also on the way back, like
    a camera reversing on a dolly).
    """
    if n_frames < 2:
        raise GeometryError(f"loop_path needs n_frames >= 2, got {n_frames}")
    wp = np.asarray(waypoints, dtype=np.float64)
    if wp.ndim != 2 or wp.shape[1] != 3 or len(wp) < 2:
        raise GeometryError("loop_path needs at least two 3D waypoints")
    seg = np.linalg.norm(np.diff(wp, axis=0), axis=1)
    cum = np.concatenate([[0], np.cumsum(seg)])
    half = (n_frames + 1) // 2

    def point_at(s: float) -> np.ndarray:
        s = min(max(s, 0.0), cum[-1])
        j = min(int(np.searchsorted(cum, s, side="right")) - 1, len(seg) - 1)
        return wp[j] + (wp[j + 1] - wp[j]) * (s - cum[j]) / max(seg[j], 1e-12)

    out = []
    for i in range(half):
        s = cum[-1] * i / max(half - 1, 1)
        eye = point_at(s)
        tgt = np.asarray(target, float) if target is not None else point_at(s + look_ahead) \
            if s + look_ahead <= cum[-1] else eye + (point_at(cum[-1]) - point_at(cum[-1] - 1e-3)) * 1e3
        out.append(look_at(eye, tgt))
    back = out[: n_frames - half][::-1]
    return _path(out + back, width, height_px, fov_x_deg, fps)


def load_path(path: str | Path) -> CameraPath:
    """Read a camera-path JSON file (``{"fps": 24, "cameras": [{"K", "width", "height", "T_world_cam"}]}``)."""
    p = Path(path)
    if not p.is_file():
        raise GeometryError(f"camera path file not found: {p} (write one with spatia_py.geometry.save_path)")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise GeometryError(f"camera path file {p} is not valid JSON: {e}") from None
    return CameraPath.from_dict(d, where=str(p))


def save_path(path: CameraPath, file: str | Path) -> None:
    """Write a camera path as JSON (the format :func:`load_path` reads)."""
    Path(file).write_text(json.dumps(path.to_dict(), indent=1))


def build_path(kind: str, n_frames: int, width: int, height: int, fov_x_deg: float, fps: float,
               params: dict) -> CameraPath:
    """Build a path from a config: ``kind`` in ``orbit | dolly | look_around | loop | file``.

    ``params`` are the keyword arguments of the matching builder (``file`` takes ``{"file": PATH}``).
    """
    common = dict(width=width, height_px=height, fov_x_deg=fov_x_deg, fps=fps)
    builders = {
        "orbit": lambda: orbit_path(n_frames=n_frames, **common, **params),
        "dolly": lambda: dolly_path(n_frames=n_frames, **common, **params),
        "look_around": lambda: look_around_path(n_frames=n_frames, **common, **params),
        "loop": lambda: loop_path(n_frames=n_frames, **common, **params),
        "file": lambda: load_path(params["file"]),
    }
    if kind not in builders:
        raise GeometryError(f"unknown path kind {kind!r}; choose one of {sorted(builders)}")
    try:
        return builders[kind]()
    except TypeError as e:
        raise GeometryError(f"path kind {kind!r}: bad parameters {sorted(params)} ({e})") from None
    except KeyError as e:
        raise GeometryError(f"path kind {kind!r}: missing parameter {e}") from None
