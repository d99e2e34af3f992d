"""IGCN: Nakao, Tong, Nakamura, Matsuda, "Image-to-graph convolutional network for deformable
shape reconstruction from a single projection image", MICCAI 2021 (read through a survey,
section 3.2; the paper itself was not at hand; [IGCN] in ``docs/references.md``).

One X-ray. A CNN (an "extended VGG-16", not pretrained) extracts image features. Every vertex of
a template mesh is projected onto the image, the features under its projection are sampled and
concatenated with its coordinates, and a graph convolutional network over the mesh predicts the
deformation of the template. Losses (survey eq.): vertex position ``L_pos = mean ||v - v^||^2``,
mapping ``L_map = mean ||q - M(p)||^2`` (the projected points) and Laplacian
``L_lap = mean ||L(v) - L(v^)||^2``, ``L = L_pos + 10 L_map + 1 L_lap``. Output: a mesh; no CT.

Deviations:

* **Template**: the mesh of the mean label of the training crops (the vertebra each crop is
  centred on): that mean, thresholded at 0.5, its component nearest the centre, smoothed
  (Gaussian, 1 voxel), marching cubes at 0.5 with ``template_step`` (2) voxels per cell
  (:func:`template_from_labels`). The trainer computes it before the first step; the checkpoint
  stores it (``G.template`` vertices in mm from the cube centre, ``G.faces``).
* **Correspondence**: the paper's target meshes are in vertex correspondence with the template;
  our crops only have masks. ``L_pos`` is therefore the symmetric Chamfer distance (squared)
  between the predicted vertices and ``gt_points`` (2000) points drawn from the marching-cubes
  surface of the crop's mask, and ``L_map`` the same 2D Chamfer distance between their
  projections on the footprint. ``L_lap`` compares the Laplacian coordinates of the prediction
  with those of the template (the survey: "constrain any deviations from the initial mesh").
  Distances are in units of half the cube side (40 mm at 64^3), projections in half footprints.
* **Normal term**: the survey lists none. ``normal`` (Pixel2Mesh's: squared cosine between each
  edge and the normal of the nearest ground-truth point) is available with weight 0 by default.
* **CNN**: 16-32-64-64 channels (R ... R/8), two 3^3 convs per level with instance norm, ReLU,
  max pooling (instead of VGG-16's 64-512); features sampled bilinearly at every level.
* **GCN**: three graph convolutions of width 64 (``W0 h_i + W1 mean_{j~i} h_j``, ReLU) and a last
  one to the displacement (started at zero: the first prediction is the template); one
  deformation stage, no mesh refinement.
* **View**: one AP projection (``views.angles_deg: [0]``) of the study's geometry.
* **Labels**: the mesh voxelised by ray parity along the third axis (:func:`voxelise`), the
  component nearest the centre, holes filled (value 1). There is **no CT output**: ``predict``
  renders the labels as a two-level volume (:data:`xfit.baselines.infer.SHAPE_HU`); compare IGCN
  on label metrics only. ``xfit reconstruct --mesh`` writes the predicted mesh itself.
* Adam lr 1e-4, betas (0.9, 0.999), constant (the survey gives no optimiser).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .common import DEFAULT_ARCHS, BaselineConfig, Lifter, centred_component, check_shape

DEFAULT_ARCH = DEFAULT_ARCHS["igcn"]
#: The survey's weights (lambda_map = 10, lambda_laplacian = 1); the normal term is off.
WEIGHTS = {"pos": 1.0, "map": 10.0, "laplacian": 1.0, "normal": 0.0}


# ----------------------------------------------------------------------------------------------
# Template mesh


def template_from_labels(mean_label: np.ndarray, spacing_mm: float, step: int = 2) -> tuple[Tensor, Tensor]:
    """The template mesh of a mean label ``[R, R, R]`` (values in [0, 1]).

    Returns:
        ``(vertices [N, 3] float32 mm from the cube centre, faces [M, 3] int64)``, a closed mesh.
    Raises:
        InputError: no voxel of the mean label reaches 0.5.
    """
    from scipy import ndimage
    from skimage.measure import marching_cubes

    mask = centred_component(np.asarray(mean_label) > 0.5)
    if not mask.any():
        raise InputError("the mean label of the training crops is empty: no IGCN template")
    smooth = ndimage.gaussian_filter(np.pad(mask.astype(np.float32), 2), 1.0)
    verts, faces, _, _ = marching_cubes(smooth, 0.5, step_size=int(step))
    r = mask.shape[0]
    verts = (verts - 2 - (r - 1) / 2) * float(spacing_mm)
    return torch.from_numpy(verts.astype(np.float32)), torch.from_numpy(faces.astype(np.int64))


def template_from_crops(volumes: Tensor, cfg: BaselineConfig, chunk: int = 64) -> tuple[Tensor, Tensor]:
    """The template of a training set: crops ``[N, 2, R, R, R]`` (a tensor or the prior's crop
    store; label channel > 0)."""
    total = torch.zeros(volumes.shape[2:], dtype=torch.float64)
    for i in range(0, volumes.shape[0], chunk):
        total += (volumes[i : i + chunk][:, 1].float() > 0).double().sum(0)  # the crop store takes slices
    step = int({**DEFAULT_ARCH, **cfg.arch}["template_step"])
    return template_from_labels((total / max(volumes.shape[0], 1)).numpy(), cfg.spacing_mm, step)


def mesh_edges(faces: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Directed edges ``[2, E]`` (both directions of every face edge, unique) and degrees ``[n]``."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = torch.cat([e, e.flip(1)]).unique(dim=0).t().contiguous()
    deg = torch.zeros(n).index_add_(0, e[1], torch.ones(e.shape[1]))
    return e, deg.clamp_min(1)


def neighbour_mean(h: Tensor, edges: Tensor, deg: Tensor) -> Tensor:
    """Mean over each vertex's neighbours: ``[B, N, C]`` -> ``[B, N, C]``."""
    out = torch.zeros_like(h).index_add_(1, edges[1], h[:, edges[0]])
    return out / deg.to(h).view(1, -1, 1)


def laplacian(v: Tensor, edges: Tensor, deg: Tensor) -> Tensor:
    """Uniform Laplacian coordinates ``v_i - mean_{j~i} v_j`` of ``[B, N, 3]``."""
    return v - neighbour_mean(v, edges, deg)


# ----------------------------------------------------------------------------------------------
# Network


class GraphConv(nn.Module):
    """``W0 h_i + W1 mean_{j~i} h_j`` over the mesh graph (``[B, N, Cin]`` -> ``[B, N, Cout]``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.w0, self.w1 = nn.Linear(cin, cout), nn.Linear(cin, cout, bias=False)

    def forward(self, h: Tensor, edges: Tensor, deg: Tensor) -> Tensor:
        return self.w0(h) + self.w1(neighbour_mean(h, edges, deg))


class IGCN(nn.Module):
    """CNN image encoder + GCN deforming the template mesh.

    Args:
        resolution: footprint side R; fov_mm: cube side; enc: CNN widths per level (R, R/2, ...);
        gcn: GCN widths.
    Shape:
        forward(x ``[B, 1, R, R]``, lifter) -> ``{"vertices": [B, N, 3]}`` (mm from the cube
        centre; N = the template's vertices).
    """

    def __init__(self, resolution: int, fov_mm: float, enc: list[int], gcn: list[int], num_views: int = 1) -> None:
        super().__init__()
        if num_views != 1:
            raise InputError(f"IGCN takes a single projection; the config has {num_views} views")
        self.resolution, self.num_views, self.half = resolution, 1, fov_mm / 2
        cins = [1] + list(enc[:-1])
        self.enc = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(a, b, 3, 1, 1),
                nn.InstanceNorm2d(b, affine=True),
                nn.ReLU(),
                nn.Conv2d(b, b, 3, 1, 1),
                nn.InstanceNorm2d(b, affine=True),
                nn.ReLU(),
            )
            for a, b in zip(cins, enc)
        )
        widths = [sum(enc) + 3] + list(gcn)
        self.gcn = nn.ModuleList(GraphConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = GraphConv(gcn[-1], 3)
        for p in self.out.parameters():
            nn.init.zeros_(p)
        self.register_buffer("template", torch.zeros(0, 3))
        self.register_buffer("faces", torch.zeros(0, 3, dtype=torch.int64))
        self.register_buffer("edges", torch.zeros(2, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("degree", torch.ones(0), persistent=False)

    @classmethod
    def from_config(cls, cfg: BaselineConfig) -> IGCN:
        a = {**DEFAULT_ARCH, **cfg.arch}
        return cls(cfg.resolution, cfg.fov_mm, list(a["enc"]), list(a["gcn"]), len(cfg.views.angles_deg))

    def set_template(self, vertices: Tensor, faces: Tensor) -> None:
        """Install the template mesh (vertices ``[N, 3]`` mm from the cube centre, faces ``[M, 3]``)."""
        check_shape(vertices, [None, 3], "template vertices")
        check_shape(faces, [None, 3], "template faces")
        if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
            raise InputError("template faces index vertices that do not exist")
        dev = self.template.device
        self.template = vertices.float().to(dev)
        self.faces = faces.long().to(dev)
        e, d = mesh_edges(self.faces.cpu(), vertices.shape[0])
        self.edges, self.degree = e.to(dev), d.to(dev)

    def forward(self, x: Tensor, lifter: Lifter) -> dict[str, Tensor]:
        r = self.resolution
        check_shape(x, [None, 1, r, r], "footprints")
        if self.template.shape[0] == 0:
            raise InputError("IGCN has no template mesh yet (set_template; the trainer makes it from the crops)")
        b = x.shape[0]
        grid = lifter.project(0, self.template[None].expand(b, -1, -1))[:, :, None, :].to(x.dtype)  # [B, N, 1, 2]
        feats, h = [], x
        for i, block in enumerate(self.enc):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            feats.append(F.grid_sample(h, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0])
        t = (self.template / self.half)[None].expand(b, -1, -1).to(x.dtype)
        g = torch.cat([torch.cat(feats, 1).transpose(1, 2), t], -1)
        for layer in self.gcn:
            g = F.relu(layer(g, self.edges, self.degree))
        return {"vertices": self.template + self.out(g, self.edges, self.degree).float() * self.half}


# ----------------------------------------------------------------------------------------------
# Ground truth, losses


def surface_points(label: Tensor, spacing_mm: float, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points and outward normals ``[B, n, 3]`` drawn (with replacement, from ``gen``) from
    the marching-cubes surface of each mask ``label [B, 1, R, R, R]`` (> 0), in mm from the cube
    centre. An empty mask gives its cube centre with zero normals."""
    from skimage.measure import marching_cubes

    r = label.shape[-1]
    pts, nrm = [], []
    for m in (label[:, 0] > 0).cpu().numpy():
        if m.any():
            v, _, nv, _ = marching_cubes(np.pad(m.astype(np.float32), 1), 0.5)
            v = (v - 1 - (r - 1) / 2) * float(spacing_mm)
            idx = torch.randint(len(v), (n,), generator=gen)
            pts.append(torch.from_numpy(v.astype(np.float32))[idx])
            nrm.append(torch.from_numpy(nv.astype(np.float32))[idx])  # skimage's "descent": outward
        else:
            torch.randint(1, (n,), generator=gen)
            pts.append(torch.zeros(n, 3))
            nrm.append(torch.zeros(n, 3))
    return torch.stack(pts).to(label.device), torch.stack(nrm).to(label.device)


def chamfer(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Squared Chamfer terms of point sets ``[B, N, D]`` and ``[B, M, D]``: (mean over a of the
    squared distance to the nearest b, the same from b); plus the index of each a's nearest b."""
    d = torch.cdist(a.float(), b.float()).square()
    da, ia = d.min(2)
    return da.mean() + d.min(1)[0].mean(), ia


def losses(
    out: dict[str, Tensor], gt: Tensor, gt_normals: Tensor, model: IGCN, lifter: Lifter, weights: dict[str, float]
) -> dict[str, Tensor]:
    """Terms and weighted ``total`` of IGCN's loss (see the module docstring).

    Args:
        out: the network's output; gt, gt_normals: ``[B, M, 3]`` surface points (mm from the cube
            centre) and unit normals; model: the network (template, edges); lifter: the views.
    """
    h = model.half
    with torch.autocast(gt.device.type, enabled=False):
        v = out["vertices"].float()
        pos, nearest = chamfer(v / h, gt / h)
        mp, _ = chamfer(lifter.project(0, v), lifter.project(0, gt))
        e, d = model.edges, model.degree
        lap = (laplacian(v / h, e, d) - laplacian(model.template[None] / h, e, d)).square().sum(-1).mean()
        n = torch.gather(gt_normals, 1, nearest[..., None].expand(-1, -1, 3))  # normal at each vertex's nearest point
        edge = v[:, e[1]] - v[:, e[0]]
        cos = (edge * n[:, e[0]]).sum(-1) / edge.norm(dim=-1).clamp_min(1e-6)
        t = {"pos": pos, "map": mp, "laplacian": lap, "normal": cos.square().mean()}
    t["total"] = sum(weights.get(k, 0.0) * val for k, val in t.items())
    return t


# ----------------------------------------------------------------------------------------------
# Voxelisation


def voxelise(vertices: np.ndarray, faces: np.ndarray, res: int, spacing_mm: float) -> np.ndarray:
    """Voxels ``[res]^3`` (bool) whose centres lie inside a closed mesh (vertices ``[N, 3]`` mm
    from the cube centre), by the parity of its crossings along the third axis: every (i, j)
    column casts a ray (offset by 1e-4 voxel so that it misses edges and vertices)."""
    idx = np.asarray(vertices, np.float64) / float(spacing_mm) + (res - 1) / 2
    tri = idx[np.asarray(faces, np.int64)]  # [M, 3, 3]
    cnt = np.zeros((res, res, res + 1), np.int32)
    for a, b, c in tri:
        lo = np.maximum(np.ceil(np.minimum(np.minimum(a, b), c)[:2]), 0).astype(int)
        hi = np.minimum(np.floor(np.maximum(np.maximum(a, b), c)[:2]), res - 1).astype(int)
        if (hi < lo).any():
            continue
        ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
        px, py = ii + 1.1e-4, jj + 1.7e-4
        den = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if abs(den) < 1e-12:
            continue
        l1 = ((b[1] - c[1]) * (px - c[0]) + (c[0] - b[0]) * (py - c[1])) / den
        l2 = ((c[1] - a[1]) * (px - c[0]) + (a[0] - c[0]) * (py - c[1])) / den
        l3 = 1 - l1 - l2
        hit = (l1 >= 0) & (l2 >= 0) & (l3 >= 0)
        if not hit.any():
            continue
        z = l1 * a[2] + l2 * b[2] + l3 * c[2]
        k0 = np.clip(np.ceil(z[hit]), 0, res).astype(int)
        np.add.at(cnt, (ii[hit], jj[hit], k0), 1)
    return (np.cumsum(cnt, 2)[..., :res] % 2) == 1


def decode_mesh(vertices: np.ndarray, faces: np.ndarray, res: int, spacing_mm: float) -> np.ndarray:
    """Predicted mesh -> labels uint8 0/1: voxelised, the component nearest the centre, holes filled."""
    return centred_component(voxelise(vertices, faces, res, spacing_mm))


def default_weights(method: str = "igcn") -> dict[str, Any]:
    return dict(WEIGHTS)
