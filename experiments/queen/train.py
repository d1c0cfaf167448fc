"""Training: the frame-1 3DGS fit (with densification) and QUEEN's per-frame residual learning.

Read top to bottom: parameter bookkeeping, the keyframe fit, the viewspace-gradient difference
and pixel masks, the residual frame. ``stream.py`` runs them over a video and writes the bitstream.
Defaults are QUEEN's N3DV values (handbook brief 2.2-2.6); presets scale iteration counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from kernels.splat import viewspace_grad
from kernels.splat.reference import quat_to_rotmat
from shared.metrics import ssim

from .model import Gaussians, LatentDecoder, PositionGate, nearest_neighbours, render_gaussians, rest_width
from .scene import Scene

QUANTIZED = ("f_dc", "rot", "opacity_logit", "log_scale")  # "sq_res" residual decoders; f_rest is "sq"
FLOAT_RESIDUALS = ("f_dc", "f_rest", "rot", "opacity_logit", "log_scale")  # the float rows' residuals (every attribute but xyz)


def photometric_loss(image: torch.Tensor, target: torch.Tensor, lambda_ssim: float = 0.2) -> torch.Tensor:
    """QUEEN's (and 3DGS's) image loss: 0.8 L1 + 0.2 (1 - SSIM)."""
    return (1 - lambda_ssim) * (image - target).abs().mean() + lambda_ssim * (1 - ssim(image, target))


def camera_schedule(cameras: list[int], iterations: int, seed: int) -> list[int]:
    """Cameras drawn without replacement within each epoch (a pure function of the seed)."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < iterations:
        order += [cameras[i] for i in torch.randperm(len(cameras), generator=g).tolist()]
    return order[:iterations]


def ndc_grad_norm(meta: dict, camera) -> torch.Tensor:
    """|dL/d mean2d| in Inria's NDC units (pixel gradient x W/2, x H/2), the units of QUEEN's thresholds."""
    grad = viewspace_grad(meta)
    scale = torch.tensor([camera.width / 2, camera.height / 2], dtype=grad.dtype, device=grad.device)
    return torch.linalg.norm(grad * scale, dim=-1)


def edit_parameter_rows(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter, keep: torch.Tensor, new_rows: torch.Tensor) -> torch.nn.Parameter:
    """A new parameter with the rows ``keep`` (bool) of ``param`` and ``new_rows`` appended, put in
    ``param``'s place in ``optimizer``; its Adam moments follow the kept rows and start at 0 for new
    ones. (Densification edits rows mid-training; torch optimizers have no API for it.)"""
    fresh = torch.nn.Parameter(torch.cat([param.detach()[keep], new_rows.detach().to(param.dtype)]))
    for group in optimizer.param_groups:
        group["params"] = [fresh if p is param else p for p in group["params"]]
    state = optimizer.state.pop(param, None)
    if state:
        for key in ("exp_avg", "exp_avg_sq"):
            state[key] = torch.cat([state[key][keep], state[key].new_zeros(len(new_rows), *state[key].shape[1:])])
        optimizer.state[fresh] = state
    return fresh


class PerGaussianParams:
    """Per-Gaussian tensors (rows = Gaussians) with one Adam, whose state follows row edits."""

    def __init__(self, tensors: dict[str, torch.Tensor], lrs: dict[str, float]):
        self.params = {k: torch.nn.Parameter(v.detach().clone()) for k, v in tensors.items()}
        self.optimizer = torch.optim.Adam([{"params": [p], "lr": lrs[k], "name": k} for k, p in self.params.items()], eps=1e-15)

    def __getitem__(self, name: str) -> torch.nn.Parameter:
        return self.params[name]

    def edit_rows(self, keep: torch.Tensor, new_rows: dict[str, torch.Tensor]) -> None:
        """Keep the rows ``keep`` (bool) and append ``new_rows``; Adam moments of new rows start at 0."""
        for name, param in list(self.params.items()):
            self.params[name] = edit_parameter_rows(self.optimizer, param, keep, new_rows[name])


# ---------------------------------------------------------------------------------------------
# Frame 1 (and every frame of the per-frame-retraining baseline): a 3DGS fit with densification.
# ---------------------------------------------------------------------------------------------


def initial_gaussians(points: torch.Tensor, colors: torch.Tensor, rest_latent_dim: int) -> dict[str, torch.Tensor]:
    """3DGS's initialisation from a point cloud: scales from the 3 nearest neighbours, opacity 0.1."""
    knn = nearest_neighbours(points, points, min(3, len(points) - 1), skip_self=True)[0].mean(-1).clamp_min(1e-4)
    n = len(points)
    return {
        "xyz": points.clone(),
        "f_dc": (colors - 0.5) / 0.28209479177387814,
        "rest_latent": points.new_zeros(n, rest_latent_dim),
        "log_scale": torch.log(knn)[:, None].repeat(1, 3),
        "rot": points.new_tensor([1.0, 0, 0, 0]).repeat(n, 1),
        "opacity_logit": points.new_full((n, 1), math.log(0.1 / 0.9)),
    }


class Keyframe:
    """Frame-1 representation: float attributes, f_rest as integer latents through an "sq" decoder."""

    def __init__(self, scene: Scene, cfg: DictConfig):
        self.cfg = cfg
        q = cfg.quant.f_rest
        self.rest_decoder = LatentDecoder(q.latent_dim, rest_width(cfg.sh_degree), q.basis, q.init_std, seed=cfg.seed).to(scene.device)
        lr = cfg.keyframe.lr
        lrs = {"xyz": lr.xyz * scene.extent, "f_dc": lr.f_dc, "rest_latent": lr.rest_latent, "log_scale": lr.scale, "rot": lr.rot, "opacity_logit": lr.opacity}
        self.params = PerGaussianParams(initial_gaussians(scene.points, scene.point_colors, q.latent_dim), lrs)
        self.decoder_optimizer = torch.optim.Adam(self.rest_decoder.parameters(), lr=lr.rest_decoder, eps=1e-15)

    def gaussians(self) -> Gaussians:
        p = self.params
        return Gaussians(p["xyz"], p["f_dc"], self.rest_decoder(p["rest_latent"]), p["log_scale"], p["rot"], p["opacity_logit"])

    @torch.no_grad()
    def commit(self) -> tuple[Gaussians, torch.Tensor]:
        """(the frame as decoded from its payload, the f_rest integer symbols)."""
        p = {k: v.detach().clone() for k, v in self.params.params.items()}
        symbols = torch.round(p["rest_latent"]).to(torch.int32)
        return Gaussians(p["xyz"], p["f_dc"], self.rest_decoder.decode_symbols(symbols), p["log_scale"], p["rot"], p["opacity_logit"]), symbols

    def densify(self, grad_avg: torch.Tensor, extent: float, generator: torch.Generator) -> None:
        """3DGS adaptive density control: clone small Gaussians with large viewspace gradients, split
        large ones into two samples, then prune nearly transparent ones."""
        c = self.cfg.keyframe.densify
        p = {k: v.detach() for k, v in self.params.params.items()}
        big_grad = grad_avg >= c.grad_threshold
        large = torch.exp(p["log_scale"]).max(-1).values > c.percent_dense * extent
        clone, split = big_grad & ~large, big_grad & large
        new = {k: v[clone] for k, v in p.items()}
        if split.any():
            std = torch.exp(p["log_scale"][split]).repeat(2, 1)
            noise = torch.randn(std.shape, generator=generator).to(std.device)  # CPU generator: same draws on any device
            offsets = (quat_to_rotmat(p["rot"][split]).repeat(2, 1, 1) @ (noise * std)[..., None])[..., 0]
            for k, v in p.items():
                rows = v[split].repeat(2, 1)
                if k == "xyz":
                    rows = rows + offsets
                elif k == "log_scale":
                    rows = rows - math.log(1.6)
                new[k] = torch.cat([new[k], rows])
        keep = ~split
        self.params.edit_rows(keep, new)
        transparent = torch.sigmoid(self.params["opacity_logit"].detach()[:, 0]) < c.min_opacity
        if transparent.any() and (~transparent).sum() >= 8:
            self.params.edit_rows(~transparent, {k: v[:0] for k, v in self.params.params.items()})


def capped(iterations: int, cfg: DictConfig) -> int:
    """A frame's optimisation steps, at most ``max_steps_per_frame`` (a dry run's cap; null: no cap)."""
    cap = cfg.get("max_steps_per_frame")
    return iterations if cap is None else min(iterations, int(cap))


def fit_keyframe(scene: Scene, frame: int, cfg: DictConfig, bar=None) -> Keyframe:
    """Fit frame ``frame`` from the scene's point cloud (the paper's frame 1; the retraining baseline)."""
    key = Keyframe(scene, cfg)
    kc = cfg.keyframe
    iterations = capped(kc.epochs * len(scene.train_cameras), cfg)
    schedule = camera_schedule(scene.train_cameras, iterations, cfg.seed * 7919 + frame)
    generator = torch.Generator().manual_seed(cfg.seed + 17 * frame)
    grad_sum = scene.points.new_zeros(len(scene.points))
    grad_count = scene.points.new_zeros(len(scene.points))
    lr0, lr1 = kc.lr.xyz * scene.extent, kc.lr.xyz_final * scene.extent
    for it, cam_index in enumerate(schedule):
        for group in key.params.optimizer.param_groups:
            if group["name"] == "xyz":
                group["lr"] = lr0 * (lr1 / lr0) ** (it / max(1, iterations - 1))
        cam = scene.cameras[cam_index]
        image, _, meta = render_gaussians(key.gaussians(), cam, scene.background, backend=cfg.backend)
        loss = photometric_loss(image, scene.image(frame, cam_index))
        loss.backward()
        with torch.no_grad():
            visible = meta["visible"]
            grad_sum[visible] += ndc_grad_norm(meta, cam)[visible]
            grad_count[visible] += 1
        key.params.optimizer.step()
        key.decoder_optimizer.step()
        key.params.optimizer.zero_grad(set_to_none=True)
        key.decoder_optimizer.zero_grad(set_to_none=True)
        epoch, within = divmod(it + 1, len(scene.train_cameras))
        d = kc.densify
        if within == 0 and d.from_epoch <= epoch < d.until_epoch and epoch % d.every_epochs == 0:
            key.densify(grad_sum / grad_count.clamp_min(1), scene.extent, generator)
            grad_sum = scene.points.new_zeros(len(key.params["xyz"]))
            grad_count = scene.points.new_zeros(len(key.params["xyz"]))
        if bar is not None:
            bar.update()
    return key


# ---------------------------------------------------------------------------------------------
# Frames >= 2: where did the scene change? (viewspace-gradient difference, pixel masks)
# ---------------------------------------------------------------------------------------------


def viewspace_difference(prev: Gaussians, scene: Scene, frame: int, backend: str = "auto") -> torch.Tensor:
    """d_i = sum over training cameras of |dL/d mean2d_i| (NDC units) for visible Gaussians, with
    L = MSE(render, GT_t) - MSE(render, GT_{t-1}) and the previous frame's Gaussians rendered.
    Exactly 0 for every Gaussian when the two frames are identical."""
    d = prev.xyz.new_zeros(len(prev))
    xyz = prev.xyz.detach().clone().requires_grad_(True)
    g = Gaussians(xyz, prev.f_dc, prev.f_rest, prev.log_scale, prev.rot, prev.opacity_logit)
    for c in scene.train_cameras:
        cam = scene.cameras[c]
        image, _, meta = render_gaussians(g, cam, scene.background, backend=backend)
        loss = F.mse_loss(image, scene.image(frame, c)) - F.mse_loss(image, scene.image(frame - 1, c))
        loss.backward()
        with torch.no_grad():
            d[meta["visible"]] += ndc_grad_norm(meta, cam)[meta["visible"]]
        xyz.grad = None
    return d


@torch.no_grad()
def changed_pixels(prev: Gaussians, d: torch.Tensor, camera, background, threshold: float, tile: int, backend: str = "auto") -> torch.Tensor:
    """QUEEN's adaptive mask for one camera: render only Gaussians with d > threshold, take
    alpha > 0.5, dilate to whole ``tile`` x ``tile`` tiles (max-pool then nearest upsampling)."""
    moving = d > threshold
    if not moving.any():
        return torch.zeros(camera.height, camera.width, dtype=torch.bool, device=d.device)
    _, alpha, _ = render_gaussians(prev.index(moving), camera, background, backend=backend)
    coarse = F.max_pool2d((alpha > 0.5).float()[None, None], tile, stride=tile, ceil_mode=True)
    return F.interpolate(coarse, scale_factor=tile, mode="nearest")[0, 0, : camera.height, : camera.width] > 0


# ---------------------------------------------------------------------------------------------
# Frames >= 2: the residual frame.
# ---------------------------------------------------------------------------------------------


class ResidualCodecState:
    """What persists between residual frames: the decoders (trained on), f_rest latents and symbols."""

    def __init__(self, cfg: DictConfig, rest_decoder: LatentDecoder, rest_latent: torch.Tensor):
        self.decoders = {
            name: LatentDecoder(q.latent_dim, out, q.basis, q.init_std, seed=cfg.seed + i).to(rest_latent.device)
            for i, (name, out) in enumerate(zip(QUANTIZED, (3, 4, 1, 3)))
            for q in [cfg.quant[name]]
        }
        self.rest_decoder = rest_decoder
        self.rest_latent = rest_latent.detach().clone()
        self.rest_symbols = torch.round(self.rest_latent).to(torch.int32)

    def state_dict(self) -> dict:
        return {
            "decoders": {k: v.state_dict() for k, v in self.decoders.items()}, "rest_decoder": self.rest_decoder.state_dict(),
            "rest_latent": self.rest_latent, "rest_symbols": self.rest_symbols,
        }

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.decoders.items():
            v.load_state_dict(state["decoders"][k])
        self.rest_decoder.load_state_dict(state["rest_decoder"])
        self.rest_latent, self.rest_symbols = state["rest_latent"], state["rest_symbols"]


class ResidualFrame:
    """One frame of QUEEN: learn residuals of every attribute on top of the frozen previous frame.

    ``gate``: position residuals pass through the L0 gate (else every Gaussian's offset is kept).
    ``quantize``: colour/rotation/opacity/scale residuals (and f_rest) are integer latents through
    the persistent decoders (else they are free float32 residuals).
    ``gate_floats`` (with ``quantize`` off): the float residuals of every attribute pass through the
    same gate, and only the Gaussians whose gate is open store any (the fair float baseline: a
    residual stream that stores only what changes, as 3DGStream-style methods do).
    ``float_attributes`` (with ``quantize`` on): these of the quantized attributes keep free float32
    residuals for every Gaussian instead (the paper's one-attribute quantisation ablations, e.g. its
    Table 4 on scale); the others stay integer latents.

    Densification within the frame (``cfg.residual.densify.enabled``; brief 2.6 "densify_dynamic"):
    a Gaussian whose mean viewspace gradient passes the threshold gets a child, a copy if it is small
    and a 1.6x smaller one sampled inside it if it is large. Rows ``>= n_prev`` are the new Gaussians.
    A new Gaussian's residuals add to its root parent's previous-frame attributes (``base``), which the
    decoder has; its latents start at the least-squares inverse of the values it copies (brief 2.2);
    its gate is always open, because its position is news to the decoder (the paper copies the
    parent's gate instead). Only new Gaussians are pruned while training (as the paper); at commit
    previous-frame Gaussians that faded below ``min_opacity`` are removed too (an object that left).
    """

    def __init__(self, prev: Gaussians, codec: ResidualCodecState, cfg: DictConfig, extent: float, d: torch.Tensor, gate: bool, quantize: bool,
                 gate_floats: bool = False, float_attributes: tuple[str, ...] = ()):
        if gate_floats and (quantize or not gate):
            raise ValueError("gate_floats gates float residuals: it needs gate=True and quantize=False")
        if float_attributes and (not quantize or not set(float_attributes) <= set(QUANTIZED)):
            raise ValueError(f"float_attributes {list(float_attributes)}: some of {list(QUANTIZED)}, with quantize=True")
        self.prev, self.codec, self.cfg, self.use_gate, self.quantize = prev.detach(), codec, cfg, gate, quantize
        self.gate_floats, self.extent = gate_floats, extent
        n, r = len(prev), cfg.residual
        self.n_prev = n
        self.base = self.prev  # what each row's residuals add to: prev, then the new rows' root parents' prev rows
        self.parent = torch.zeros(0, dtype=torch.long, device=prev.xyz.device)  # [n_new] root parent (row of prev)
        self.rest_base_symbols = codec.rest_symbols if quantize else None  # f_rest symbols each row's delta is taken against
        self.grad_sum, self.grad_count = prev.xyz.new_zeros(n), prev.xyz.new_zeros(n)
        self.xyz = torch.nn.Parameter(prev.xyz.detach().clone())
        groups = [{"params": [self.xyz], "lr": r.lr.xyz * extent}]
        self.latents: dict[str, torch.nn.Parameter] = {}  # integer-latent residuals (straight-through rounded)
        if quantize:
            quantized = [k for k in QUANTIZED if k not in float_attributes]
            self.latents = {k: torch.nn.Parameter(prev.xyz.new_zeros(n, cfg.quant[k].latent_dim)) for k in quantized}
            self.rest_latent = torch.nn.Parameter(codec.rest_latent.clone())
            groups += [{"params": [self.latents[k]], "lr": cfg.quant[k].latent_lr} for k in quantized]
            groups += [{"params": list(codec.decoders[k].parameters()), "lr": cfg.quant[k].decoder_lr} for k in quantized]
            groups += [{"params": [self.rest_latent], "lr": cfg.quant.f_rest.latent_lr}, {"params": list(codec.rest_decoder.parameters()), "lr": cfg.quant.f_rest.decoder_lr}]
        # free float32 residuals: every attribute but xyz in the float rows, the float_attributes in a quantized one
        self.deltas = {k: torch.nn.Parameter(torch.zeros_like(getattr(prev, k))) for k in (float_attributes if quantize else FLOAT_RESIDUALS)}
        groups += [{"params": [self.deltas[k]], "lr": r.float_lr[k]} for k in self.deltas]
        self.optimizer = torch.optim.Adam(groups, eps=1e-15)  # a fresh Adam every frame, as QUEEN
        self.gate = PositionGate(n, **cfg.gate.hard_concrete).to(prev.xyz.device)
        if gate:
            self.gate.init_from_difference(d)
            self.gate_optimizer = torch.optim.Adam(self.gate.parameters(), lr=cfg.gate.lr, eps=1e-15)

    @property
    def n_new(self) -> int:
        return len(self.parent)

    def gate_values(self) -> torch.Tensor:
        """Every row's gate: the trained gate of the previous frame's Gaussians, 1 for new ones."""
        old = self.gate() if self.use_gate else self.prev.xyz.new_ones(self.n_prev)
        return torch.cat([old, old.new_ones(self.n_new)])

    def gaussians(self) -> Gaussians:
        p = self.base
        xyz = p.xyz + self.gate_values()[:, None] * (self.xyz - p.xyz)
        if self.quantize:
            dec = self.codec.decoders

            def residual(k):
                return dec[k](self.latents[k]) if k in self.latents else self.deltas[k]

            return Gaussians(
                xyz, p.f_dc + residual("f_dc"), self.codec.rest_decoder(self.rest_latent),
                p.log_scale + residual("log_scale"), p.rot + residual("rot"), p.opacity_logit + residual("opacity_logit"),
            )
        return self.with_deltas(xyz, self.gate_values() if self.gate_floats else None)

    def with_deltas(self, xyz: torch.Tensor, gate: torch.Tensor | None, rows: torch.Tensor | None = None) -> Gaussians:
        """Base plus the float residuals (each scaled by its Gaussian's gate value, if given), of
        ``rows`` (all rows if None; ``xyz`` and ``gate`` are already those rows')."""
        p = self.base if rows is None else self.base.index(rows)
        dl = {k: v if rows is None else v[rows] for k, v in self.deltas.items()}
        dl = {k: v if gate is None else gate[:, None] * v for k, v in dl.items()}
        return Gaussians(xyz, p.f_dc + dl["f_dc"], p.f_rest + dl["f_rest"], p.log_scale + dl["log_scale"], p.rot + dl["rot"], p.opacity_logit + dl["opacity_logit"])

    def loss(self, image, target) -> torch.Tensor:
        loss = photometric_loss(image, target)
        if self.use_gate:
            loss = loss + self.cfg.gate.lambda_l0 * self.gate.prob_open().mean()
        return loss

    def fit_view(self, camera, target, background, mask=None) -> float:
        """One optimisation step on one view; returns the loss. With ``mask`` (the masked phase) only
        those pixels are rendered, and the target elsewhere becomes the background the masked render
        shows there, so the loss sees the changed pixels only."""
        image, _, meta = render_gaussians(self.gaussians(), camera, background, backend=self.cfg.backend, pixel_mask=mask)
        if mask is not None:
            target = torch.where(mask[..., None], target, background)
        loss = self.loss(image, target)
        loss.backward()
        if self.cfg.residual.densify.enabled:  # brief 2.5: densification bookkeeping between backward and step
            with torch.no_grad():
                visible = meta["visible"]
                self.grad_sum[visible] += ndc_grad_norm(meta, camera)[visible]
                self.grad_count[visible] += 1
        self.step()
        return float(loss.detach())

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.use_gate:
            self.gate_optimizer.step()
            self.gate_optimizer.zero_grad(set_to_none=True)
            self.gate.clamp_()

    @torch.no_grad()
    def densify(self, generator: torch.Generator) -> None:
        """Prune new Gaussians that turned transparent, then add a child to each Gaussian whose mean
        viewspace gradient since the last densification is at least the threshold."""
        c = self.cfg.residual.densify
        current = self.gaussians()
        keep = torch.ones(len(current), dtype=torch.bool, device=current.xyz.device)
        keep[self.n_prev:] = torch.sigmoid(current.opacity_logit[self.n_prev:, 0]) >= c.min_opacity
        source = torch.nonzero((self.grad_sum / self.grad_count.clamp_min(1) >= c.grad_threshold) & keep)[:, 0]
        child = current.index(source)
        large = torch.exp(child.log_scale).amax(-1) > c.percent_dense * self.extent
        if large.any():  # 3DGS's split: a child sampled from the Gaussian, 1.6x smaller
            std = torch.exp(child.log_scale[large])
            noise = torch.randn(std.shape, generator=generator).to(std.device)
            child.xyz[large] += (quat_to_rotmat(child.rot[large]) @ (noise * std)[..., None])[..., 0]
            child.log_scale[large] -= math.log(1.6)
        root = torch.cat([torch.arange(self.n_prev, device=source.device), self.parent])[source]
        self.add_rows(keep, root, child)
        self.grad_sum, self.grad_count = current.xyz.new_zeros(len(self.base)), current.xyz.new_zeros(len(self.base))

    @torch.no_grad()
    def add_rows(self, keep: torch.Tensor, root: torch.Tensor, values: Gaussians) -> None:
        """Keep rows ``keep`` and append new Gaussians with root parents ``root`` (rows of prev) that
        start at ``values``: float residuals exactly, latents through the decoders' least-squares inverse."""
        base = self.prev.index(root)
        self.parent = torch.cat([self.parent[keep[self.n_prev:]], root])
        self.base = Gaussians(**{k: torch.cat([v[keep], getattr(base, k)]) for k, v in self.base.as_dict().items()})
        opt = self.optimizer
        self.xyz = edit_parameter_rows(opt, self.xyz, keep, values.xyz)  # the gate of a new row is 1: its position is xyz
        if self.quantize:
            dec = self.codec.decoders
            for k in self.latents:
                self.latents[k] = edit_parameter_rows(opt, self.latents[k], keep, dec[k].inverse(getattr(values, k) - getattr(base, k)))
            self.rest_latent = edit_parameter_rows(opt, self.rest_latent, keep, self.codec.rest_decoder.inverse(values.f_rest))
            self.rest_base_symbols = torch.cat([self.rest_base_symbols[keep], self.codec.rest_symbols[root]])
        for k in self.deltas:
            self.deltas[k] = edit_parameter_rows(opt, self.deltas[k], keep, getattr(values, k) - getattr(base, k))

    @torch.no_grad()
    def committed_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of the committed frame in order, removed [n_prev] bool): the previous frame's
        Gaussians that stay, then the new ones ordered by root parent, so that the decoder rebuilds
        the new rows' parents from a child count per previous Gaussian."""
        n = self.n_prev
        removed = torch.zeros(n, dtype=torch.bool, device=self.prev.xyz.device)
        new = torch.arange(n, n + self.n_new, device=removed.device)
        if self.cfg.residual.densify.enabled:
            opacity = torch.sigmoid(self.gaussians().opacity_logit[:, 0])
            removed = opacity[:n] < self.cfg.residual.densify.min_opacity
            new = new[opacity[n:] >= self.cfg.residual.densify.min_opacity]
        new = new[torch.argsort(self.parent[new - n], stable=True)]
        return torch.cat([torch.nonzero(~removed)[:, 0], new]), removed

    @torch.no_grad()
    def commit(self) -> tuple[Gaussians, dict]:
        """The frame as the decoder will rebuild it, and the payload to encode.

        Every attribute is recomputed from what is stored (integer symbols, decoder weights, gated
        float32 offsets), with the same operations the decoder runs, so decoding is exact.
        """
        rows, removed = self.committed_rows()
        p = self.base.index(rows)
        g = self.gate_values()[rows]
        open_ = g > 0
        offset = g[:, None] * (self.xyz[rows] - p.xyz)
        xyz = p.xyz + torch.where(open_[:, None], offset, torch.zeros_like(offset))
        payload: dict = {"gate_open": open_, "xyz_offset": offset[open_]}
        if self.cfg.residual.densify.enabled:  # which Gaussians appear (children per previous Gaussian) and disappear
            parents = self.parent[rows[rows >= self.n_prev] - self.n_prev]
            payload |= {"children": torch.bincount(parents, minlength=self.n_prev).to(torch.int32), "removed": removed}
        if self.quantize:
            dec = self.codec.decoders
            symbols = {k: torch.round(v[rows]).to(torch.int32) for k, v in self.latents.items()}
            rest_symbols = torch.round(self.rest_latent[rows]).to(torch.int32)
            payload.update({f"{k}_symbols": s for k, s in symbols.items()})
            payload.update({f"{k}_delta": v[rows].detach().clone() for k, v in self.deltas.items()})
            payload["f_rest_symbol_delta"] = rest_symbols - self.rest_base_symbols[rows]
            payload["decoders"] = {k: dec[k].payload() for k in self.latents} | {"f_rest": self.codec.rest_decoder.payload()}

            def residual(k):
                return dec[k].decode_symbols(symbols[k]) if k in symbols else self.deltas[k][rows].detach()

            state = Gaussians(
                xyz, p.f_dc + residual("f_dc"), self.codec.rest_decoder.decode_symbols(rest_symbols),
                p.log_scale + residual("log_scale"), p.rot + residual("rot"), p.opacity_logit + residual("opacity_logit"),
            )
            self.codec.rest_latent, self.codec.rest_symbols = self.rest_latent[rows].detach().clone(), rest_symbols
        elif self.gate_floats:  # only open Gaussians store residuals (a closed gate is 0: adds nothing)
            payload.update({f"{k}_gated_delta": (g[:, None] * v[rows])[open_].detach().clone() for k, v in self.deltas.items()})
            state = self.with_deltas(xyz, g, rows)
        else:
            payload.update({f"{k}_delta": v[rows].detach().clone() for k, v in self.deltas.items()})
            state = self.with_deltas(xyz, None, rows)
        return state.detach(), payload


def train_residual_frame(prev: Gaussians, codec: ResidualCodecState, scene: Scene, frame: int, cfg: DictConfig, gate: bool, quantize: bool, bar=None,
                         gate_floats: bool = False, float_attributes: tuple[str, ...] = ()):
    """Learn frame ``frame`` from ``prev``; returns (committed Gaussians, payload, diagnostics)."""
    r = cfg.residual
    d = viewspace_difference(prev, scene, frame, cfg.backend)
    masks = {c: changed_pixels(prev, d, scene.cameras[c], scene.background, r.mask_threshold, r.mask_tile, cfg.backend) for c in scene.train_cameras}
    model = ResidualFrame(prev, codec, cfg, scene.extent, d, gate, quantize, gate_floats, float_attributes)
    n_train = len(scene.train_cameras)
    iterations = capped(r.epochs * n_train, cfg)
    masked_iterations = math.ceil(r.masked_epochs_fraction * r.epochs) * n_train if r.masked_rendering else 0
    generator = torch.Generator().manual_seed(cfg.seed * 7907 + frame)  # the split children's positions
    densify = r.densify
    for it, c in enumerate(camera_schedule(scene.train_cameras, iterations, cfg.seed * 104729 + frame)):
        cam, target = scene.cameras[c], scene.image(frame, c)
        mask = masks[c] if it < masked_iterations else None
        if mask is None or mask.any():  # nothing changed in this view: skip, as the tile-masked rasterizer would
            model.fit_view(cam, target, scene.background, mask)
        epoch, within = divmod(it + 1, n_train)
        if densify.enabled and within == 0 and densify.from_epoch <= epoch < r.epochs and (epoch - densify.from_epoch) % densify.every_epochs == 0:
            model.densify(generator)
        if bar is not None:
            bar.update()
    gate_values = model.gate_values().detach()[: model.n_prev]
    state, payload = model.commit()
    diagnostics = {"d": d, "gate_values": gate_values, "mask_fraction": float(torch.stack(list(masks.values())).float().mean())}
    if densify.enabled:
        diagnostics |= {"added": int(payload["children"].sum()), "removed": int(payload["removed"].sum())}
    return state, payload, diagnostics
