"""The embedded default scene: a procedurally generated dynamic multi-view video.

A textured static backdrop (Gaussians coloured from Grace Hopper's photograph, which ships with
matplotlib) and two moving objects: a ball that travels along a curve, and an ellipsoid that spins,
pulses in size and warms in colour (both textured from matplotlib's Minduka photograph). A
forward-facing arc of cameras films it, like N3DV's rig; camera 0 (the central one) is held out
for testing, as N3DV holds out cam00. Everything is a pure function of the seed, and the set of
moving ground-truth Gaussians is known, so gate precision and recall can be measured.

``Scene`` is also what the N3DV loader (n3dv.py) returns for real data (then ``truth`` is None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from shared.progress import progress

from .model import Gaussians, render_gaussians


@dataclass
class Camera:
    viewmat: torch.Tensor  # [4, 4] world-to-camera, OpenCV axes
    K: torch.Tensor  # [3, 3]
    width: int
    height: int
    name: str = ""

    @property
    def center(self) -> torch.Tensor:
        return -self.viewmat[:3, :3].T @ self.viewmat[:3, 3]

    def to(self, device) -> Camera:
        return Camera(self.viewmat.to(device), self.K.to(device), self.width, self.height, self.name)


@dataclass
class Truth:
    """Ground truth of a synthetic scene: the Gaussians of every frame and which of them move."""

    frames: list[Gaussians]
    dynamic: torch.Tensor  # [N_gt] bool
    entering: torch.Tensor | None = None  # [N_gt] bool: the object that appears mid-stream (None: there is none)


@dataclass
class Scene:
    cameras: list[Camera]
    images: torch.Tensor  # [T, C, H, W, 3]: float32 in [0, 1] (rendered scenes) or uint8 (decoded videos, 4x less memory)
    test_cameras: list[int]
    points: torch.Tensor  # [M, 3] initial point cloud (COLMAP's role)
    point_colors: torch.Tensor  # [M, 3] in [0, 1]
    background: torch.Tensor  # [3]
    extent: float  # scene radius (3DGS's "cameras_extent"), scales position learning rates
    truth: Truth | None = None
    name: str = "synthetic"

    @property
    def n_frames(self) -> int:
        return self.images.shape[0]

    def image(self, frame: int, camera: int) -> torch.Tensor:
        """[H, W, 3] float32 in [0, 1], whatever the storage."""
        image = self.images[frame, camera]
        return image.float() / 255 if image.dtype == torch.uint8 else image

    @property
    def train_cameras(self) -> list[int]:
        return [c for c in range(len(self.cameras)) if c not in self.test_cameras]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> Scene:
        """The scene on ``device`` (cameras, images, point cloud; the ground truth too)."""
        truth = None if self.truth is None else Truth([f.to(device) for f in self.truth.frames], self.truth.dynamic.to(device),
                                                      None if self.truth.entering is None else self.truth.entering.to(device))
        return Scene(
            cameras=[c.to(device) for c in self.cameras], images=self.images.to(device), test_cameras=self.test_cameras,
            points=self.points.to(device), point_colors=self.point_colors.to(device), background=self.background.to(device),
            extent=self.extent, truth=truth, name=self.name,
        )


def photograph(name: str) -> torch.Tensor:
    """[H, W, 3] float in [0, 1] from matplotlib's bundled sample photographs."""
    import matplotlib.cbook
    import matplotlib.image

    with matplotlib.cbook.get_sample_data(name) as f:
        img = np.asarray(matplotlib.image.imread(f, format=name.rsplit(".", 1)[-1]), dtype=np.float32)
    img = img[..., :3]
    return torch.from_numpy(img / 255.0 if img.max() > 1.5 else img)


def sample_texture(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``img`` at ``uv`` in [0, 1]^2 (u across, v down) -> [N, 3]."""
    grid = (uv * 2 - 1)[None, None].float()
    out = torch.nn.functional.grid_sample(img.permute(2, 0, 1)[None], grid, align_corners=False)
    return out[0, :, 0].T.contiguous()


def look_at(eye: torch.Tensor, target: torch.Tensor, up=(0.0, -1.0, 0.0)) -> torch.Tensor:
    """World-to-camera [4, 4] for an OpenCV camera at ``eye`` looking at ``target`` (y down)."""
    forward = torch.nn.functional.normalize(target - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor(up)), dim=0)
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    viewmat = torch.eye(4)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ eye
    return viewmat


def camera_arc(n: int, width: int, height: int, radius: float = 3.4, arc_degrees: float = 60.0, focal_factor: float = 1.3) -> list[Camera]:
    """``n`` cameras on a horizontal arc facing the origin; index 0 is the central one."""
    angles = torch.linspace(-arc_degrees / 2, arc_degrees / 2, n)
    order = sorted(range(n), key=lambda i: (abs(angles[i].item()), i))  # central camera first
    K = torch.tensor([[focal_factor * width, 0, width / 2], [0, focal_factor * width, height / 2], [0, 0, 1]], dtype=torch.float32)
    cams = []
    for rank, i in enumerate(order):
        a = math.radians(angles[i].item())
        lift = 0.12 * (-1) ** i  # a little vertical parallax, as in a real rig
        eye = torch.tensor([radius * math.sin(a), lift, -radius * math.cos(a)])
        cams.append(Camera(look_at(eye, torch.tensor([0.0, 0.0, 0.3])), K.clone(), width, height, name=f"cam{rank:02d}"))
    return cams


def _rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / 0.28209479177387814


def _blob(n: int, radii: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points spread over an ellipsoid surface (Fibonacci sphere) and their texture uv."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    unit = torch.stack([torch.cos(theta) * torch.sin(phi), torch.cos(phi), torch.sin(theta) * torch.sin(phi)], -1)
    uv = torch.stack([(theta / (2 * math.pi)) % 1.0, phi / math.pi], -1)
    return unit * radii, uv


def _rotation_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32)


def _quat_from_rotation_y(angle: float) -> torch.Tensor:
    return torch.tensor([math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0])


SH_C1 = 0.4886025119029199  # the degree-1 real SH constant (kernels.splat.reference)


def highlight(direction: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """f_rest [N, 9] (SH degree 1, 3 colours) that adds ``strength`` [N, 3] x cos(angle between the
    viewing direction and ``direction`` [N, 3]) to the colour: a soft highlight seen from one side.
    The degree-1 basis is (-C1 y, C1 z, -C1 x), so the coefficients are (-h_y, h_z, -h_x) / C1."""
    h = torch.nn.functional.normalize(direction, dim=-1)
    coeffs = torch.stack([-h[:, 1], h[:, 2], -h[:, 0]], 1) / SH_C1  # [N, 3 basis functions]
    return (coeffs[:, :, None] * strength[:, None, :]).reshape(len(h), 9)


def synthetic_truth(n_frames: int, seed: int, backdrop: tuple[int, int] = (18, 14), ball: int = 40, ellipsoid: int = 48,
                    object_scale: float = 0.085, entering: int = 0, enter_frame: int | None = None) -> Truth:
    """Ground-truth Gaussians for every frame: colours in f_dc and view-dependent highlights in
    f_rest (SH degree 1), so that SH residuals matter. The wall has a sheen towards one side of the
    camera arc; the ball a highlight towards a fixed direction; the ellipsoid's highlight is fixed
    to its surface, so it turns with the ellipsoid and its world-frame SH changes every frame.

    ``entering`` > 0 adds an object of that many Gaussians that is absent (fully transparent) before
    ``enter_frame`` (default: the middle frame) and present from it on: what frame-1 Gaussians cannot
    show without densification after frame 1. It draws no random numbers, so the rest of the scene
    is the same as without it."""
    g = torch.Generator().manual_seed(seed)
    hopper, minduka = photograph("grace_hopper.jpg"), photograph("Minduka_Present_Blue_Pack.png")

    # backdrop: a textured wall at z = 1.4 with a little relief
    nx, ny = backdrop
    u, v = torch.meshgrid(torch.linspace(0, 1, nx), torch.linspace(0, 1, ny), indexing="xy")
    uv = torch.stack([u.reshape(-1), v.reshape(-1)], -1)
    wall = torch.stack([(uv[:, 0] - 0.5) * 4.0, (uv[:, 1] - 0.5) * 3.0, 1.4 + 0.05 * torch.randn(len(uv), generator=g)], -1)
    spacing = 4.0 / (nx - 1)
    wall_scale = torch.tensor([0.75 * spacing, 0.75 * spacing, 0.03]).expand(len(uv), 3)
    wall_rgb = sample_texture(hopper, uv)

    # moving objects, in object coordinates
    ball_pts, ball_uv = _blob(ball, torch.tensor([0.28, 0.28, 0.28]))
    ell_pts, ell_uv = _blob(ellipsoid, torch.tensor([0.22, 0.40, 0.22]))
    ball_rgb = sample_texture(minduka, ball_uv)
    ell_rgb = sample_texture(minduka, 0.5 + 0.5 * (ell_uv - 0.5))
    new_pts, new_uv = _blob(entering, torch.tensor([0.2, 0.2, 0.2]))  # empty for entering=0
    new_rgb = sample_texture(hopper, 0.3 + 0.4 * new_uv)
    phase = torch.rand(1, generator=g).item() * 2 * math.pi
    # where the highlights point (drawn per scene), and how bright they are (per colour)
    sheen, ball_light, ell_light = (torch.nn.functional.normalize(torch.randn(3, generator=g) * torch.tensor([1.0, 0.3, 0.3]) + torch.tensor(b), dim=0)
                                    for b in ([0.0, 0.0, 0.0], [0.0, -0.3, -1.0], [1.0, 0.0, -0.5]))
    wall_rest = highlight(sheen.expand(len(uv), 3), torch.full((len(uv), 3), 0.12))
    ball_rest = highlight(ball_light.expand(ball, 3), torch.tensor([0.30, 0.30, 0.25]).expand(ball, 3))

    frames = []
    for t in range(n_frames):
        s = t / max(1, n_frames - 1)
        ball_center = torch.tensor([-0.55 + 0.55 * s, -0.30 + 0.25 * math.sin(math.pi * s + phase), 0.1])
        angle = 1.2 * s
        pulse = 1.0 + 0.15 * math.sin(2 * math.pi * s)
        ell_center = torch.tensor([0.55, 0.15, 0.3])
        ell_world = (ell_pts * pulse) @ _rotation_y(angle).T + ell_center
        warm = torch.tensor([0.25, 0.0, -0.2]) * s  # the ellipsoid warms in colour over the clip

        xyz = torch.cat([wall, ball_pts + ball_center, ell_world])
        scale = torch.cat([wall_scale, torch.full((ball, 3), object_scale), torch.full((ellipsoid, 3), object_scale * pulse)])
        rot = torch.cat([torch.tensor([[1.0, 0, 0, 0]]).expand(len(wall) + ball, 4), _quat_from_rotation_y(angle).expand(ellipsoid, 4)])
        rgb = torch.cat([wall_rgb, ball_rgb, (ell_rgb + warm).clamp(0.02, 0.98)])
        ell_rest = highlight((_rotation_y(angle) @ ell_light).expand(ellipsoid, 3), torch.tensor([0.25, 0.25, 0.30]).expand(ellipsoid, 3))
        opacity = torch.full((len(xyz), 1), 3.0)
        if entering:
            present = t >= (n_frames // 2 if enter_frame is None else enter_frame)
            xyz = torch.cat([xyz, new_pts + torch.tensor([-0.45, 0.45, 0.0])])
            scale = torch.cat([scale, torch.full((entering, 3), object_scale)])
            rot = torch.cat([rot, torch.tensor([[1.0, 0, 0, 0]]).expand(entering, 4)])
            rgb = torch.cat([rgb, new_rgb])
            opacity = torch.cat([opacity, torch.full((entering, 1), 3.0 if present else -30.0)])  # sigmoid(-30): culled by every renderer
        n_rest = len(xyz) - len(wall_rest) - ball - ellipsoid
        frames.append(
            Gaussians(
                xyz=xyz.float(), f_dc=_rgb_to_sh_dc(rgb).float(),
                f_rest=torch.cat([wall_rest, ball_rest, ell_rest, wall_rest.new_zeros(n_rest, 9)]).float(),
                log_scale=torch.log(scale).float(), rot=rot.float(), opacity_logit=opacity,
            )
        )
    n_static = len(wall)
    dynamic = torch.cat([torch.zeros(n_static, dtype=torch.bool), torch.ones(ball + ellipsoid + entering, dtype=torch.bool)])
    entering_mask = torch.arange(len(dynamic)) >= len(dynamic) - entering if entering else None
    return Truth(frames=frames, dynamic=dynamic, entering=entering_mask)


def camera_extent(cameras: list[Camera]) -> float:
    """3DGS's scene radius: 1.1 x the largest distance of a camera centre from their mean."""
    centers = torch.stack([c.center for c in cameras])
    return 1.1 * float(torch.linalg.norm(centers - centers.mean(0), dim=-1).max())


@torch.no_grad()
def synthetic_scene(
    n_frames: int = 6, n_cameras: int = 7, width: int = 32, height: int = 24, seed: int = 0,
    point_fraction: float = 0.6, point_jitter: float = 0.03, backdrop: tuple[int, int] = (18, 14), ball: int = 40, ellipsoid: int = 48,
    object_scale: float = 0.085, entering: int = 0, enter_frame: int | None = None,
    device: str = "cpu",
) -> Scene:
    """Render the ground truth from ``n_cameras`` for ``n_frames``; camera 0 is the test view.

    The initial point cloud plays COLMAP's role: a random ``point_fraction`` of the frame-1
    Gaussians' centres, jittered by ``point_jitter`` (scene units), with their colours.
    Ground truth is rendered on ``device`` (gsplat on CUDA at paper scale) and returned there.
    """
    if n_cameras < 2:
        raise ValueError(f"need at least 2 cameras (one is held out for testing), got {n_cameras}")
    truth = synthetic_truth(n_frames, seed, backdrop, ball, ellipsoid, object_scale, entering, enter_frame)
    cams = camera_arc(n_cameras, width, height)
    background = torch.zeros(3)
    bar = progress(total=n_frames * n_cameras, desc="queen ground truth views")  # minutes at paper scale on a CPU

    def view(frame: Gaussians, cam: Camera) -> torch.Tensor:
        with torch.no_grad():
            image = render_gaussians(frame.to(device), cam.to(device), background.to(device))[0].cpu()
        bar.update()
        return image

    images = torch.stack([torch.stack([view(frame, cam) for cam in cams]) for frame in truth.frames]).clamp(0, 1)
    bar.close()
    g = torch.Generator().manual_seed(seed + 1)
    first = truth.frames[0]
    seen = torch.nonzero(first.opacity_logit[:, 0] > 0)[:, 0]  # an object not yet in the scene has no points
    pick = seen[torch.randperm(len(seen), generator=g)[: max(8, int(point_fraction * len(seen)))]]
    points = first.xyz[pick] + point_jitter * torch.randn(len(pick), 3, generator=g)
    colors = (first.f_dc[pick] * 0.28209479177387814 + 0.5).clamp(0, 1)
    return Scene(
        cameras=cams, images=images.float(), test_cameras=[0], points=points, point_colors=colors,
        background=background, extent=camera_extent(cams),
        truth=truth, name=f"synthetic-seed{seed}",
    ).to(device)
