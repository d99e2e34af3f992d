"""Tests of xfit.baselines part 2 (TransVert, X-CTRSNet, IGCN): shapes, gradient flow, the
view-aligned lifting, annotation discs, point projection, losses against hand computations (and the
perceptual term against xfit.metrics.ssim2d_slices), mesh voxelisation, a tiny training run whose
loss falls, checkpoint round trip, bit-exact resume, inference, the front door and bad input. Tiny
configs (16^3 at 5 mm, 24 x 24 detectors), CPU, one thread."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import baseline_cli
from click.testing import CliRunner
from spine_synth import synthetic_crops as _crops

from xfit.baselines import igcn, transvert, xctrsnet
from xfit.baselines.common import (
    PART2_METHODS,
    BaselineConfig,
    Lifter,
    annotation_disc,
    check_method,
    footprint_pixels,
    load_config,
    param_count,
    save_model,
)
from xfit.baselines.registry import build_model, load_model
from xfit.baselines.train import MODEL_FILE, STATE_FILE, BaselineTrainer, train
from xfit.errors import CheckpointError, InputError
from xfit.geometry import View, world_to_pixel
from xfit.prior.checkpoint import load_training_state

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ARCH = {
    "transvert": {"enc": [4, 8], "map": 4, "dec": [4, 4], "disc": [4, 8]},
    "xctrsnet": {"enc": [4, 8], "path": [4, 4], "seg": [4, 8]},
    "igcn": {"enc": [4, 8], "gcn": [8, 8], "gt_points": 200, "template_step": 1},
}
LEVELS = torch.tensor([20.0, 21.0])


def tiny(method: str, **training) -> BaselineConfig:
    t = {"batch_size": 2, "steps": 4, "lr": 1e-3, "checkpoint_every": 2, "log_every": 1, "seed": 0, **training}
    views = {"detector": [24, 24], "pixel_spacing_mm": [4.0, 4.0]}
    if method == "igcn":
        views["angles_deg"] = [0.0]
    return BaselineConfig.from_dict(
        {
            "method": method,
            "resolution": 16,
            "spacing_mm": 5.0,
            "arch": TINY_ARCH[method],
            "views": views,
            "training": t,
        }
    )


def n_views(method: str) -> int:
    return 1 if method == "igcn" else 2


def make_net(cfg: BaselineConfig):
    """The network of a config; IGCN gets the template of the synthetic crops."""
    net = build_model(cfg)
    if cfg.method == "igcn":
        net.set_template(*igcn.template_from_crops(_crops(2), cfg))
    return net


def make_trainer(cfg: BaselineConfig, **kw) -> BaselineTrainer:
    tr = BaselineTrainer(cfg, **kw)
    if cfg.method == "igcn":
        tr.G.set_template(*igcn.template_from_crops(_crops(2), cfg))
    return tr


def _forward(net, method, x, lifter):
    if method == "transvert":
        ann = annotation_disc(torch.full((x.shape[0], 2, 2), 7.5), 16)
        return net(x, lifter, ann)
    if method == "igcn":
        return net(x, lifter)
    return net(x, lifter, torch.randn(x.shape[0], 1, 16, 16, 16))


# ----------------------------------------------------------------------------------------------
# registry, networks, geometry


def test_registry():
    from xfit.baselines.registry import MODELS

    # the registry wires each part-2 method to its own network
    assert {m: MODELS[m] for m in PART2_METHODS} == {
        "transvert": transvert.TransVert,
        "xctrsnet": xctrsnet.XCTRSNet,
        "igcn": igcn.IGCN,
    }
    for m in PART2_METHODS:
        assert check_method(m) == m and load_config(m).method == m


@pytest.mark.parametrize("method", PART2_METHODS)
@pytest.mark.parametrize("batch", [1, 2])
def test_network_shape_and_gradients(method, batch):
    cfg = tiny(method)
    torch.manual_seed(0)
    net = make_net(cfg)
    if method == "igcn":  # the last graph conv starts at zero (the template), which would hide the rest
        for p in net.out.parameters():
            p.data.normal_(0, 0.1)
    if method == "transvert":  # the attention's gain starts at 0, which would hide q, k and v
        for enc in net.encoders:
            enc.attention.gamma.data.fill_(0.5)
    views = [cfg.views.views() for _ in range(batch)]
    out = _forward(net, method, torch.randn(batch, n_views(method), 16, 16), Lifter(views, (0, 0, 0), cfg.fov_mm))
    keys = {"transvert": {"shape"}, "xctrsnet": {"volume", "seg_logit", "seg_gt_logit"}, "igcn": {"vertices"}}[method]
    assert set(out) == keys
    for v in out.values():
        assert v.shape == ((batch, net.template.shape[0], 3) if method == "igcn" else (batch, 1, 16, 16, 16))
    sum(v.square().mean() for v in out.values()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_full_size_parameter_budget():
    for m in PART2_METHODS:
        assert 0.1e6 < param_count(build_model(load_config(m))) < 4e6


def test_lift_volume_is_the_papers_axis_permutation():
    """Parallel AP / lateral views: a view-aligned volume [depth, rows, cols] lands in the cube as
    the permutation the papers write (AP: depth = posterior, rows = inferior, cols = patient's
    left; lateral: depth = patient's left, cols = anterior)."""
    vs = [View(a, shape=(32, 32), pixel_spacing_mm=(2.5, 2.5), projection="parallel") for a in (0.0, 90.0)]
    lif = Lifter([vs], (0, 0, 0), 80.0)
    r = 8
    feat = torch.randn(1, 2, r, r, r)
    ap, lat = lif.lift_volume(feat, 0, r)[0], lif.lift_volume(feat, 1, r)[0]
    f = feat[0]
    # AP: out[i, j, k] = feat[depth = r-1-j, row = r-1-k, col = r-1-i]
    assert torch.allclose(ap, f.flip(1, 2, 3).permute(0, 3, 1, 2), atol=1e-5)
    # lateral: out[i, j, k] = feat[depth = r-1-i, row = r-1-k, col = j]
    assert torch.allclose(lat, f.flip(1, 2).permute(0, 1, 3, 2), atol=1e-5)
    assert not torch.allclose(ap, lat)


def test_annotation_disc_and_footprint_pixels():
    d = annotation_disc(torch.tensor([3.0, 4.0]), 8)
    assert d.shape == (8, 8) and d.sum() == 5 and d[3, 4] == 1 and d[2, 4] == 1 and d[4, 5] == 0
    assert annotation_disc(torch.tensor([[-5.0, 3.0]]), 8).sum() == 0
    v = View(90.0, shape=(24, 24), pixel_spacing_mm=(4.0, 4.0))
    centre_px = world_to_pixel(torch.zeros(1, 3, dtype=torch.float64), v)
    assert torch.allclose(
        footprint_pixels(centre_px, v, (0, 0, 0), 80.0, 16), torch.tensor([[7.5, 7.5]], dtype=torch.float64)
    )
    # a point 20 mm superior sits a quarter of the footprint higher (cone magnification cancels)
    up = world_to_pixel(torch.tensor([[0.0, 0.0, 20.0]], dtype=torch.float64), v)
    assert torch.allclose(
        footprint_pixels(up, v, (0, 0, 0), 80.0, 16)[0, 0], torch.tensor(3.5, dtype=torch.float64), atol=1e-6
    )
    ann = transvert.annotation_points(
        torch.tensor([[0.0, 0.0, 20.0]]),
        [[View(0.0, shape=(24, 24), pixel_spacing_mm=(4.0, 4.0)), v]],
        (0, 0, 0),
        80.0,
        16,
    )
    # centre (3.5, 7.5): the four pixels within 1 px are (3|4, 7|8), in both views
    assert ann.shape == (1, 2, 16, 16) and (ann[0, :, 3:5, 7:9] == 1).all() and ann.sum() == 8


def test_network_rejects_wrong_input():
    cfg = tiny("transvert")
    net = build_model(cfg)
    lif = Lifter([cfg.views.views()], (0, 0, 0), cfg.fov_mm)
    with pytest.raises(InputError, match="annotation"):
        net(torch.zeros(1, 2, 16, 16), lif, torch.zeros(1, 1, 16, 16))
    with pytest.raises(InputError, match="footprints"):
        build_model(tiny("xctrsnet"))(torch.zeros(1, 2, 8, 8), lif)
    with pytest.raises(InputError, match="transvert needs one level per crop"):
        BaselineTrainer(cfg).train_step(_crops(2))
    g = build_model(tiny("igcn"))
    lif1 = Lifter([tiny("igcn").views.views()], (0, 0, 0), 80.0)
    with pytest.raises(InputError, match="no template"):
        g(torch.zeros(1, 1, 16, 16), lif1)
    with pytest.raises(InputError, match="do not exist"):
        g.set_template(torch.zeros(3, 3), torch.tensor([[0, 1, 3]]))
    with pytest.raises(InputError, match="single projection"):
        BaselineConfig.from_dict({"method": "igcn", "views": {"angles_deg": [0, 90]}})


def test_point_projection_agrees_with_the_grid():
    """Lifter.project of the voxel centres is Lifter.grid (one footprint geometry)."""
    vs = [View(a, shape=(24, 24), pixel_spacing_mm=(4.0, 4.0)) for a in (0.0, 90.0)]
    lif = Lifter([vs], (3.0, -2.0, 5.0), 80.0)
    ax = (torch.arange(4, dtype=torch.float64) + 0.5 - 2) * 20.0
    pts = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(1, -1, 3)
    for v in (0, 1):
        assert torch.allclose(lif.project(v, pts).float(), lif.grid(v, 4)[:, :, 0], atol=1e-6)
    p = pts.float().requires_grad_(True)
    lif.project(0, p).sum().backward()
    assert p.grad.abs().sum() > 0


def _box_mesh(lo=(4, 5, 6), hi=(12, 11, 10), res=16, spacing=5.0):
    from skimage.measure import marching_cubes

    m = np.zeros((res, res, res), np.float32)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    v, f, _, _ = marching_cubes(np.pad(m, 1), 0.5)
    return m, (v - 1 - (res - 1) / 2) * spacing, f


def test_igcn_mesh_pieces_by_hand():
    m, v, f = _box_mesh()
    assert np.array_equal(igcn.voxelise(v, f, 16, 5.0), m > 0)  # surfaces halfway between voxel centres
    assert igcn.decode_mesh(v, f, 16, 5.0).sum() == m.sum()
    # template: closed (every undirected edge in exactly two faces), centred on the mask
    tv, tf = igcn.template_from_labels(np.pad(np.ones((6, 6, 6)), 5) * 0.8, 5.0, 1)
    e = torch.cat([tf[:, [0, 1]], tf[:, [1, 2]], tf[:, [2, 0]]]).sort(1)[0]
    assert (e.unique(dim=0, return_counts=True)[1] == 2).all()
    assert torch.allclose(tv.mean(0), torch.zeros(3), atol=1e-3)
    with pytest.raises(InputError, match="empty"):
        igcn.template_from_labels(np.full((8, 8, 8), 0.4), 5.0)
    d, near = igcn.chamfer(torch.tensor([[[0.0, 0, 0]]]), torch.tensor([[[1.0, 0, 0], [0, 2, 0]]]))
    assert math.isclose(d.item(), 1 + (1 + 4) / 2, rel_tol=1e-6) and near.tolist() == [[0]]
    tri = torch.tensor([[0, 1, 2]])
    edges, deg = igcn.mesh_edges(tri, 3)
    assert edges.shape == (2, 6) and deg.tolist() == [2, 2, 2]
    pts = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [0, 4, 0]]])
    assert torch.allclose(igcn.laplacian(pts, edges, deg)[0, 0], torch.tensor([-1.0, -2.0, 0.0]))


def test_igcn_losses_by_hand():
    cfg = tiny("igcn")
    net = make_net(cfg)
    lif = Lifter([cfg.views.views()], (0, 0, 0), cfg.fov_mm)
    out = net(torch.randn(1, 1, 16, 16), lif)
    assert torch.equal(out["vertices"][0], net.template)  # the last layer starts at zero
    gt = net.template[None].clone()
    normals = torch.zeros_like(gt)
    t = igcn.losses(out, gt, normals, net, lif, igcn.WEIGHTS)
    assert t["pos"].item() < 1e-7 and t["map"].item() < 1e-7 and t["laplacian"].item() == 0 and t["normal"] == 0
    shifted = {"vertices": out["vertices"] + torch.tensor([8.0, 0.0, 0.0])}  # 8 mm = 0.2 half-sides along x
    t = igcn.losses(shifted, gt, normals, net, lif, igcn.WEIGHTS)
    assert t["laplacian"].item() < 1e-10  # a translation keeps the Laplacian coordinates
    assert 0 < t["pos"].item() <= 2 * 0.2**2 + 1e-6
    assert math.isclose(t["total"].item(), t["pos"].item() + 10 * t["map"].item(), rel_tol=1e-5)


# ----------------------------------------------------------------------------------------------
# losses against hand computations


def test_transvert_losses_by_hand():
    pred = torch.zeros(1, 1, 2, 2, 2)
    label = -torch.ones(1, 1, 2, 2, 2)
    label[0, 0, 0, 0, 0] = 1
    target = transvert.shape_target(label, torch.tensor([20.0]))
    assert target.sum() == 20 and target[0, 0, 0, 0, 0] == 20
    t = transvert.generator_losses(pred, target, transvert.WEIGHTS, torch.full((1, 1, 1, 1, 1), 0.5))
    assert math.isclose(t["recon"].item(), 20 / 8, rel_tol=1e-6)  # mean |y - G|
    assert math.isclose(t["adv"].item(), 0.25, rel_tol=1e-6)  # (0.5 - 1)^2
    assert math.isclose(t["total"].item(), 10 * 2.5 + 0.1 * 0.25, rel_tol=1e-6)
    d = transvert.discriminator_loss(torch.full((1,), 0.5), torch.full((1,), 0.25))
    assert math.isclose(d.item(), 0.25 + 0.0625, rel_tol=1e-6)  # eq. 3, no factor 1/2
    lab = -torch.ones(1, 1, 4, 4, 4)
    lab[0, 0, 3, 1:3, 0] = 1  # voxel centres (3 - 1.5) * 5 = 7.5 mm; y at -2.5 and 2.5; z -7.5
    assert torch.allclose(transvert.mask_centroids(lab, 5.0), torch.tensor([[7.5, 0.0, -7.5]], dtype=torch.float64))


def test_transvert_decode_shape():
    shape = np.zeros((8, 8, 8), np.float32)
    shape[2:6, 2:6, 2:6] = 21.3
    shape[3, 3, 3] = 9.0  # below half of 21: a hole, filled
    shape[0, 0, 0] = 20.0  # another component: dropped
    labels, level = transvert.decode_shape(shape)
    assert level == 21 and labels.dtype == np.uint8 and labels.sum() == 64 and labels[0, 0, 0] == 0
    assert transvert.decode_shape(np.full((4, 4, 4), 3.0, np.float32))[1] is None


def test_xctrsnet_losses_by_hand():
    logit = torch.zeros(1, 1, 2, 2, 2)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[0, 0, 0, 0, :] = 1
    # p = 0.5 everywhere: 1 - (2 * 0.5 * 2 + 1) / (4 + 2 + 1) = 4/7
    assert math.isclose(xctrsnet.dice_loss(logit, mask).item(), 4 / 7, rel_tol=1e-6)
    assert math.isclose(xctrsnet.rsc_loss(logit, torch.full_like(logit, math.log(3))).item(), 0.25, rel_tol=1e-6)
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((10, 10, 10)))
    b = a + 0.3 * torch.from_numpy(rng.random((10, 10, 10)))
    from xfit.metrics import ssim2d_slices

    for axis in range(3):
        got = xctrsnet.ssim_slices(a[None, None], b[None, None], axis + 2).item()
        assert math.isclose(got, ssim2d_slices(a.numpy(), b.numpy(), 2.0, axis=axis), rel_tol=1e-5, abs_tol=1e-6)
    assert abs(xctrsnet.multiview_ssim_loss(a[None, None].float(), a[None, None].float()).item()) < 1e-6
    pred = torch.zeros(1, 1, 2, 2, 2)
    target = torch.zeros(1, 1, 2, 2, 2)
    target[0, 0, 0, 0, 0] = 1.0
    out = {"volume": pred, "seg_logit": logit, "seg_gt_logit": logit}
    t = xctrsnet.losses(out, target, mask * 2 - 1, xctrsnet.WEIGHTS)
    assert math.isclose(t["recon"].item(), 1 / 8, rel_tol=1e-6) and t["rsc"].item() == 0
    assert math.isclose(t["dice"].item(), 4 / 7, rel_tol=1e-6) and math.isclose(
        t["dice_gt"].item(), 4 / 7, rel_tol=1e-6
    )
    want = 1 / 8 + t["perc"].item() + 2 * 4 / 7
    assert math.isclose(t["total"].item(), want, rel_tol=1e-6)


# ----------------------------------------------------------------------------------------------
# training


@pytest.mark.parametrize("method", PART2_METHODS)
def test_tiny_training_loss_falls(method):
    tr = make_trainer(tiny(method, lr=3e-3))
    crops = _crops(2)
    first = tr.train_step(crops, LEVELS)
    for _ in range(24):
        last = tr.train_step(crops, LEVELS)
    key = "loss_pos" if method == "igcn" else "loss_recon"
    assert last[key] < 0.7 * first[key], (first, last)
    if method == "igcn":
        assert last["loss_map"] < 0.7 * first["loss_map"] and last["loss"] < 0.7 * first["loss"], (first, last)
    if method == "xctrsnet":  # the soft Dice of a small mask falls slowly from p = 0.5 everywhere
        assert last["loss_perc"] < 0.7 * first["loss_perc"], (first, last)
        assert last["loss_dice"] < first["loss_dice"] - 0.02 and last["loss_dice_gt"] < first["loss_dice_gt"] - 0.02


@pytest.mark.parametrize("method", PART2_METHODS)
def test_resume_is_bit_exact(tmp_path, ct_dir, method):
    cfg = tiny(method)
    cfg.views.angle_jitter_deg = 3.0
    train(cfg, ct_dir, tmp_path / "a", max_steps=4, progress=False, workers=1)
    train(cfg, ct_dir, tmp_path / "b", max_steps=2, progress=False, workers=1)
    train(cfg, ct_dir, tmp_path / "b", max_steps=4, resume=True, progress=False, workers=1)
    ta, ma = load_training_state(tmp_path / "a" / STATE_FILE)
    tb, mb = load_training_state(tmp_path / "b" / STATE_FILE)
    assert ma["step"] == mb["step"] == 4 and set(ta) == set(tb)
    if method == "transvert":
        assert any(k.startswith("D.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    la = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in la] == [x["loss"] for x in lb]


@pytest.mark.parametrize("method", PART2_METHODS)
def test_bf16_autocast_step(method):
    tr = make_trainer(tiny(method), amp="bf16")
    logs = tr.train_step(_crops(2), LEVELS)
    assert tr.amp and all(math.isfinite(v) for v in logs.values())


# ----------------------------------------------------------------------------------------------
# checkpoints, configs, inference


@pytest.mark.parametrize("method", PART2_METHODS)
def test_checkpoint_round_trip(tmp_path, method):
    cfg = tiny(method)
    torch.manual_seed(1)
    net = make_net(cfg).eval()
    path = save_model(tmp_path / "m.safetensors", net, cfg, {"steps": 3})
    b = load_model(path, method)
    assert b.config.to_dict() == cfg.to_dict() and b.meta["training"]["steps"] == 3
    lif = Lifter([cfg.views.views()], (0, 0, 0), cfg.fov_mm)
    x = torch.randn(1, n_views(method), 16, 16)
    torch.manual_seed(2)
    with torch.no_grad():
        a = _forward(net, method, x, lif)
        torch.manual_seed(2)
        c = _forward(b.model, method, x, lif)
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(CheckpointError, match=f"'{method}' checkpoint, not 'ear'"):
        load_model(path, "ear")
    assert not any("pickle" in p.name for p in tmp_path.iterdir())


def test_bad_configs():
    with pytest.raises(InputError, match="unknown term"):
        BaselineConfig.from_dict({"method": "transvert", "training": {"weights": {"dice": 1}}})
    with pytest.raises(InputError, match="one width per level"):
        BaselineConfig.from_dict({"method": "transvert", "arch": {"enc": [4, 8]}})
    with pytest.raises(InputError, match="one width per scale"):
        BaselineConfig.from_dict({"method": "xctrsnet", "arch": {"path": [4, 4]}})
    with pytest.raises(InputError, match="too many"):
        BaselineConfig.from_dict(
            {"method": "xctrsnet", "resolution": 16, "arch": {"enc": [4, 4, 4, 4], "path": [4, 4, 4, 4]}}
        )
    with pytest.raises(InputError, match="arch: unknown key"):
        BaselineConfig.from_dict({"method": "xctrsnet", "arch": {"map": 3}})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ct_dir):
    out = {}
    for m in PART2_METHODS:
        run = tmp_path_factory.mktemp(f"run-{m}")
        train(tiny(m), ct_dir, run, max_steps=2, progress=False, workers=1)
        out[m] = run / MODEL_FILE
    return out


def test_predict(trained):
    from xfit.baselines.infer import SHAPE_HU, predict

    cfg = tiny("transvert")
    views = cfg.views.views()
    images = [np.random.default_rng(i).random((24, 24)).astype(np.float32) for i in range(2)]
    hu, lab, _aff, notes = predict("transvert", trained["transvert"], images, views)
    assert hu.shape == (16, 16, 16) and hu.dtype == np.float32 and lab.dtype == np.uint8
    assert set(np.unique(hu)) <= set(SHAPE_HU) and notes["ct_output"] is False and "no CT output" in notes["hu"]
    assert "shape output" in notes["labels"] and "projected cube centre" in notes["annotation"]
    assert np.array_equal(hu > SHAPE_HU[0], lab > 0)
    _, _, _, n2 = predict("transvert", trained["transvert"], images, views, centroid_rc=[(5.0, 6.0), (7.0, 8.0)])
    assert "given target pixels: view 0 (5.0, 6.0); view 1 (7.0, 8.0)" in n2["annotation"]
    with pytest.raises(InputError, match="one \\(row, col\\) per view"):
        predict("transvert", trained["transvert"], images, views, centroid_rc=[(5.0, 6.0)])
    with pytest.raises(InputError, match="finite"):
        predict("transvert", trained["transvert"], images, views, centroid_rc=[(5.0, float("nan")), (1.0, 1.0)])
    hu, lab, _aff, notes = predict("igcn", trained["igcn"], images[:1], views[:1])
    assert notes["ct_output"] is False and "mesh output" in notes["labels"] and lab.dtype == np.uint8
    assert np.array_equal(hu > SHAPE_HU[0], lab > 0) and lab.sum() > 0
    mesh = notes["mesh"]
    assert mesh["faces"].shape[1] == 3 and mesh["vertices_mm"].shape == (notes["mesh_size"]["vertices"], 3)
    with pytest.raises(InputError, match="trained on 1 views"):
        predict("igcn", trained["igcn"], images, views)
    hu, lab, _, notes = predict("xctrsnet", trained["xctrsnet"], images, views)
    assert notes["ct_output"] is True and "segmentation output" in notes["labels"] and lab.dtype == np.uint8
    assert -1000 <= hu.min() and hu.max() <= 1500
    with pytest.raises(CheckpointError, match="not 'transvert'"):
        predict("transvert", trained["xctrsnet"], images, views)


def test_target_pixels_map_into_the_crops():
    from types import SimpleNamespace

    from xfit.reconstruct import target_pixels

    t = SimpleNamespace(pixels_rc=[(100.0, 50.0), (30.0, 40.0)])
    assert target_pixels(t, None) == [(100.0, 50.0), (30.0, 40.0)]
    rois = [SimpleNamespace(row0=90, col0=20, factor=(2.0, 2.0)), SimpleNamespace(row0=0, col0=0, factor=(1.0, 1.0))]
    # crop pixel j covers original pixels row0 + 2j .. row0 + 2j + 1: (100 - 90 + 0.5) / 2 - 0.5 = 4.75
    assert target_pixels(t, rois) == [(4.75, 14.75), (30.0, 40.0)]


def test_cli_train_baseline(tmp_path, ct_dir):
    import yaml

    cfgfile = tmp_path / "tiny.yaml"
    cfgfile.write_text(yaml.safe_dump(tiny("transvert").to_dict()))
    res = CliRunner().invoke(
        baseline_cli(),
        [
            "train-baseline",
            "transvert",
            str(ct_dir),
            "-o",
            str(tmp_path / "run"),
            "--config",
            str(cfgfile),
            "--max-steps",
            "1",
            "--quiet",
            "--workers",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "trained transvert 1 steps" in res.output and (tmp_path / "run" / MODEL_FILE).is_file()


@pytest.mark.parametrize("method", PART2_METHODS)
def test_reconstruct_method_through_the_front_door(tmp_path, trained, ct_dir, method):
    """`xfit reconstruct --method transvert|xctrsnet` writes the fit's outputs with its own labels."""
    import nibabel as nib

    from xfit.cli import main

    ct = sorted(Path(ct_dir).rglob("*_ct.nii.gz"))[0]
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "simulate",
            str(ct),
            "--angles",
            "0,90",
            "--detector",
            "24",
            "--pixel-spacing",
            "4",
            "-o",
            str(tmp_path / "xr"),
        ],
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "rec"
    images = [str(tmp_path / "xr" / "ap.png")] + ([] if method == "igcn" else [str(tmp_path / "xr" / "lat.png")])
    args = ["reconstruct", *images, "-o", str(out), "--method", method, "--checkpoint", str(trained[method]), "--quiet"]
    if method == "transvert":
        args += ["--target", "12,11", "--target", "12,12"]
    if method == "igcn":
        args += ["--mesh"]  # a single-view method: no --allow-single-view, and no warning about it
    res = runner.invoke(main, args)
    assert res.exit_code == 0, (res.output, res.exception)
    assert "single view" not in res.output + (res.stderr if hasattr(res, "stderr") else "")
    for name in ("recon.nii.gz", "labels.nii.gz", "preview.png", "report.json"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    fit = report["settings"]["fit"]
    assert report["settings"]["method"] == method and "threshold" not in fit["labels"]
    assert fit["ct_output"] is (method == "xctrsnet")
    if method == "igcn":
        assert report["surface"] == "surface.stl (the method's mesh)" and "mesh" not in fit
        n_faces = int.from_bytes((out / "surface.stl").read_bytes()[80:84], "little")
        assert n_faces == fit["mesh_size"]["faces"]
    if method == "transvert":
        assert "given target pixels" in fit["annotation"] and report["target"]["method"] == "clicks"
    lab = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    assert set(np.unique(lab)) <= {0, 1}


def test_igcn_fine_tune_keeps_its_start_networks_mesh(tmp_path, ct_dir):
    """IGCN's template mesh is data, not architecture: a start network whose mesh has another
    number of vertices than the crops' own (``ship-baselines --finish`` on the shipped file) is
    fine-tuned with its mesh, and the run resumes with it."""
    from xfit.baselines.common import save_model

    cfg = tiny("igcn")
    first = tmp_path / "first"
    train(cfg, ct_dir, first, max_steps=2, progress=False, workers=1)
    start = load_model(first / MODEL_FILE, "igcn")
    verts, faces = igcn.template_from_labels(np.pad(np.ones((4, 4, 4)), 6) * 0.8, cfg.spacing_mm, 1)
    assert verts.shape[0] != start.model.template.shape[0]
    start.model.set_template(verts, faces)
    path = save_model(tmp_path / "start.safetensors", start.model, start.config, {"images": 4})
    tuned = tmp_path / "tuned"
    train(cfg, ct_dir, tuned, max_steps=1, progress=False, workers=1, init_from=path)
    assert torch.equal(load_model(tuned / MODEL_FILE, "igcn").model.template, verts)
    train(cfg, ct_dir, tuned, max_steps=2, resume=True, progress=False, workers=1)
    after = load_model(tuned / MODEL_FILE, "igcn")
    assert torch.equal(after.model.template, verts) and torch.equal(after.model.faces, faces)
    assert after.meta["training"]["init_from"]["images"] == 4
