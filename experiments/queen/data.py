"""The scene a run streams: the embedded synthetic scene, or a real N3DV scene at ``data.root``."""

from __future__ import annotations

from shared.runtime import resolve_device

from .scene import Scene, synthetic_scene


def load_scene(cfg) -> Scene:
    """The scene on ``trainer.device`` (everything a run touches lives on one device)."""
    d = cfg.data
    device = resolve_device(cfg.trainer.device)
    if d.root:
        from .n3dv import load_n3dv

        return load_n3dv(d.root, max_frames=d.max_frames, downscale=d.downscale).to(device)
    return synthetic_scene(
        n_frames=d.n_frames, n_cameras=d.n_cameras, width=d.width, height=d.height, seed=d.seed,
        point_fraction=d.point_fraction, backdrop=tuple(d.backdrop), ball=d.ball, ellipsoid=d.ellipsoid, object_scale=d.object_scale,
        entering=d.entering, enter_frame=d.enter_frame, device=device,
    )
