"""The N3DV layout (Li et al., Neural 3D Video, CVPR 2022): write the embedded scene in it, and read
real scenes from it.

A scene folder holds ``poses_bounds.npy`` (LLFF: one row of 17 floats per camera, a 3x5 block of
camera-to-world [down, right, backwards | position | height, width, focal] and then near, far)
and one video per camera, ``cam00.mp4`` ... in the same order. cam00 is the test camera.
The initial point cloud, the first found of (``point_cloud`` says which; users of the official code
trace reproduction gaps to a random initialisation, so a real cloud is read wherever it is):
- ``points3D.npy`` ([M, 6]: xyz, rgb in [0, 1]; our writer makes one);
- a COLMAP model (``sparse/0``, ``colmap/sparse/0`` or ``sparse``: cameras, images and points3D as
  .bin or .txt), read with pycolmap;
- ``points3D.ply`` (what 3DGS's converter writes; x, y, z and red, green, blue), read with plyfile;
- else points along random rays of the central camera between its near and far bounds (3DGS's
  random initialisation; the real N3DV release ships no point cloud), and the loader says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from shared.errors import DataError
from shared.video import read_video, write_video

from .scene import Camera, Scene, camera_extent


def _video_files(root: Path) -> list[Path]:
    return sorted(root.glob("cam[0-9][0-9].mp4"))


def write_n3dv(scene: Scene, root: str | Path, crf: int = 0) -> Path:
    """Write ``scene`` as an N3DV folder (H.264 videos; crf 0 with 4:4:4 chroma is near-lossless)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for cam in scene.cameras:
        c2w = torch.linalg.inv(cam.viewmat)
        right, down, forward, pos = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3]
        block = torch.stack([down, right, -forward, pos, torch.tensor([cam.height, cam.width, cam.K[0, 0].item()])], 1)
        depths = (scene.points - cam.center) @ forward
        rows.append(np.concatenate([block.numpy().reshape(-1), [max(0.05, float(depths.min()) * 0.9), float(depths.max()) * 1.1]]))
    np.save(root / "poses_bounds.npy", np.stack(rows).astype(np.float64))
    np.save(root / "points3D.npy", torch.cat([scene.points, scene.point_colors], 1).numpy())
    frames = scene.images.cpu().numpy() if scene.images.dtype == torch.uint8 else (scene.images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    for c in range(len(scene.cameras)):
        write_video(root / f"cam{c:02d}.mp4", frames[:, c], fps=30, crf=crf)
    return root


def load_n3dv(root: str | Path, max_frames: int | None = None, downscale: int = 1, n_random_points: int = 20000, seed: int = 0,
              log=print) -> Scene:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"N3DV scene folder {root} does not exist (data.root= should point at a folder with poses_bounds.npy and cam00.mp4 ...)")
    poses_path = root / "poses_bounds.npy"
    if not poses_path.is_file():
        raise DataError(f"{root} is not an N3DV scene: poses_bounds.npy is missing")
    try:
        poses = np.load(poses_path)
    except (ValueError, OSError, EOFError) as err:  # EOFError: an empty file
        raise DataError(f"{poses_path}: cannot be read as a numpy array ({err or 'empty file'})") from None
    if poses.ndim != 2 or poses.shape[1] != 17:
        raise DataError(f"{poses_path}: expected one row of 17 floats per camera (LLFF), got shape {poses.shape}")
    if not np.isfinite(poses).all():
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(poses))[:, 0]})
        raise DataError(f"{poses_path}: NaN or infinite values in the rows of camera(s) {', '.join(f'cam{i:02d}' for i in bad)}")
    videos = _video_files(root)
    if len(videos) != len(poses):
        raise DataError(f"{root}: camera count mismatch, poses_bounds.npy describes {len(poses)} cameras but there are {len(videos)} videos (cam00.mp4 ...)")

    clips = [read_video(v, max_frames, downscale) for v in videos]  # uint8, shrunk frame by frame
    n_frames = min(len(c) for c in clips)
    if max_frames is not None and n_frames < max_frames:
        short = [v.name for v, c in zip(videos, clips) if len(c) < max_frames]
        raise DataError(f"{root}: data.max_frames={max_frames} but {', '.join(short)} have fewer frames ({n_frames})")
    if len({len(c) for c in clips}) > 1:  # silently cutting every camera to the shortest would hide a broken capture
        lengths = ", ".join(f"{v.name} {len(c)}" for v, c in zip(videos, clips))
        raise DataError(f"{root}: the cameras have different lengths ({lengths} frames); trim them to one length or set data.max_frames={n_frames}")
    sizes = {c.shape[1:3] for c in clips}
    if len(sizes) > 1:
        listing = ", ".join(f"{v.name} {c.shape[2]}x{c.shape[1]}" for v, c in zip(videos, clips))
        raise DataError(f"{root}: the cameras have different frame sizes ({listing}); N3DV cameras share one size")
    images = torch.from_numpy(np.stack(clips, 1))  # [T, C, H, W, 3] uint8: Scene.image() gives float frames
    del clips
    height, width = images.shape[2], images.shape[3]

    cameras = []
    for i, row in enumerate(poses):
        block = torch.from_numpy(row[:15].reshape(3, 5)).float()
        down, right, back, pos, hwf = block.unbind(1)
        c2w = torch.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, -back, pos
        focal = float(hwf[2]) * width / float(hwf[1])  # rescale to the decoded resolution
        K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32)
        cameras.append(Camera(torch.linalg.inv(c2w), K, width, height, name=videos[i].stem))

    found = point_cloud(root)
    if found is None:
        points, colors = _random_points(cameras, poses[:, 15:], n_random_points, seed)
        source = f"{n_random_points} random points in camera 0's frustum (no points3D.npy, COLMAP model or points3D.ply in {root})"
    else:
        points, colors, source = found
    log(f"queen: initial point cloud: {source}")
    return Scene(
        cameras=cameras, images=images, test_cameras=[0], points=points, point_colors=colors,
        background=torch.zeros(3), extent=camera_extent(cameras), truth=None, name=root.name,
    )


def _checked(points: np.ndarray, colors: np.ndarray, where: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not len(points) or not np.isfinite(points).all():
        raise DataError(f"{where}: the point cloud is empty or holds NaN or infinite coordinates")
    return torch.from_numpy(np.asarray(points, np.float32)), torch.from_numpy(np.asarray(colors, np.float32))


def point_cloud(root: Path) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """(points [M, 3], colours [M, 3] in [0, 1], where they came from) of the first cloud found, or None."""
    npy = root / "points3D.npy"
    if npy.is_file():
        try:
            cloud = np.load(npy)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{npy}: cannot be read as a numpy array ({err or 'empty file'})") from None
        if cloud.ndim != 2 or cloud.shape[1] != 6 or not len(cloud) or not np.isfinite(cloud).all():
            raise DataError(f"{npy}: expected finite points as rows of 6 floats (xyz, rgb in [0, 1]), got shape {cloud.shape}")
        return *_checked(cloud[:, :3], cloud[:, 3:6], npy), f"{len(cloud)} points from {npy}"
    for sub in ("sparse/0", "colmap/sparse/0", "sparse"):
        model = root / sub
        if (model / "points3D.bin").is_file() or (model / "points3D.txt").is_file():
            import pycolmap

            try:
                recon = pycolmap.Reconstruction(str(model))
            except Exception as err:  # pycolmap raises plain RuntimeError/ValueError with C++ messages
                raise DataError(f"{model}: cannot be read as a COLMAP model ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
            ids = sorted(recon.points3D)
            xyz = np.array([recon.points3D[i].xyz for i in ids]).reshape(-1, 3)
            rgb = np.array([recon.points3D[i].color for i in ids]).reshape(-1, 3) / 255.0
            return *_checked(xyz, rgb, model), f"{len(ids)} points of the COLMAP model in {model}"
    for ply in (root / "points3D.ply", root / "sparse/0/points3D.ply"):
        if ply.is_file():
            from plyfile import PlyData

            try:
                vertex = PlyData.read(str(ply))["vertex"]
                xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], 1)
                rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1) / 255.0
            except (ValueError, KeyError, OSError, EOFError) as err:
                raise DataError(f"{ply}: cannot be read as a point cloud with x, y, z, red, green, blue ({err})") from None
            return *_checked(xyz, rgb, ply), f"{len(xyz)} points from {ply}"
    return None


def _random_points(cameras: list[Camera], bounds: np.ndarray, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points along random rays of the central camera between its near and far bounds, grey."""
    g = torch.Generator().manual_seed(seed)
    cam = cameras[0]
    near, far = float(bounds[0, 0]), float(bounds[0, 1])
    pix = torch.rand(n, 2, generator=g) * torch.tensor([cam.width, cam.height])
    rays = torch.cat([(pix - cam.K[:2, 2]) / cam.K[0, 0], torch.ones(n, 1)], 1)
    depth = near + (far - near) * torch.rand(n, 1, generator=g)
    c2w = torch.linalg.inv(cam.viewmat)
    points = (rays * depth) @ c2w[:3, :3].T + c2w[:3, 3]
    return points, torch.full((n, 3), 0.5)
