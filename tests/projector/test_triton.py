"""Tests of the fused Triton projector kernels (xfit.projector.triton) against the reference.

There is no GPU in CI, so the kernels run in the Triton CPU interpreter. ``TRITON_INTERPRET=1``
must be set before triton is first imported, which other test modules may already have done in
this process; the checks therefore run in a subprocess (this file executed as a script), once
per session, and each pytest test asserts the outcome of its check. Sizes are tiny (a 6x5x4
volume, 4x5 detectors) because the interpreter is slow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SHAPE = (6, 5, 4)  # non-cubic so that axis-order mistakes show
#: Permuted, flipped, anisotropic voxel index -> world mm affine (centred near the isocentre).
AFFINE = [[0.0, -1.5, 0.0, 3.0], [2.0, 0.0, 0.0, -5.0], [0.0, 0.0, -1.0, 1.5], [0.0, 0.0, 0.0, 1.0]]


# ----------------------------------------------------------------------------- checks (subprocess)


def _views(projection: str, angles=(0.0, 63.0)):
    from xfit.geometry import View

    spacing = (3.0, 3.0) if projection == "cone" else (2.0, 2.0)
    return [
        View(a, sdd_mm=100.0, sod_mm=60.0, shape=(4, 5), pixel_spacing_mm=spacing, projection=projection)
        for a in angles
    ]


def _affine(batch: int, dtype):
    """AFFINE, or for batch 2 a per-volume pair (the second shifted by half a millimetre)."""
    import torch

    a = torch.tensor(AFFINE, dtype=dtype)
    if batch == 1:
        return a
    b = a.clone()
    b[:3, 3] += torch.tensor([0.5, -0.25, 0.3], dtype=dtype)
    return torch.stack([a, b])


def _close(got, want, rtol: float) -> None:
    """Assert ``|got - want| <= rtol * max|want|`` elementwise, with a useful message."""
    scale = float(want.abs().max())
    err = float((got - want).abs().max())
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    assert scale > 0, "the oracle is all zeros: the test geometry misses the volume"
    assert err <= rtol * scale, f"max error {err:.3e} > {rtol:g} x {scale:.3e}"


def check_forward_matches_reference() -> None:
    import torch

    from xfit.geometry import make_rays
    from xfit.projector import reference
    from xfit.projector.triton import project_triton

    torch.manual_seed(0)
    for projection in ("cone", "parallel"):
        views = _views(projection)
        for batch in (1, 2):
            for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
                if dtype == torch.float64 and batch == 1:
                    continue  # float64 once per projection is enough (interpreter time)
                mu = torch.rand(batch, 1, *SHAPE, dtype=dtype)
                affine = _affine(batch, dtype)
                got = project_triton(mu, affine, views)
                want = reference.project_rays(mu, affine, make_rays(views, dtype=dtype))
                assert got.dtype == dtype
                assert (want != 0).float().mean() > 0.3, "too few rays hit the volume"
                _close(got, want, rtol)


def check_dispatcher_triton_backend() -> None:
    import torch

    from xfit.projector import project

    torch.manual_seed(1)
    mu = torch.rand(1, 1, *SHAPE)
    views = _views("cone", angles=(37.0,))
    got = project(mu, torch.tensor(AFFINE), views, backend="triton", step_mm=0.7)
    want = project(mu, torch.tensor(AFFINE), views, backend="reference", step_mm=0.7)
    _close(got, want, 1e-5)


def check_adjoint_identity() -> None:
    import torch

    from xfit.geometry import make_rays
    from xfit.projector import reference
    from xfit.projector.triton import backproject_triton, project_triton

    torch.manual_seed(2)
    for projection, batch in (("cone", 2), ("parallel", 1)):
        views = _views(projection)
        affine = _affine(batch, torch.float64)
        x = torch.rand(batch, 1, *SHAPE, dtype=torch.float64)
        y = torch.randn(batch, 2, 4, 5, dtype=torch.float64)
        ax = project_triton(x, affine, views)
        aty = backproject_triton(y, affine, views, SHAPE)
        lhs, rhs = float((ax * y).sum()), float((x * aty).sum())
        assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + 1.0), f"<Ax,y>={lhs} != <x,A^T y>={rhs}"
        want = reference.backproject_rays(y, affine, make_rays(views, dtype=torch.float64), SHAPE)
        _close(aty, want, 1e-12)
    # float32 kernels (atomics in float32)
    views = _views("cone")
    x, y = torch.rand(1, 1, *SHAPE), torch.randn(1, 2, 4, 5)
    lhs = float((project_triton(x, AFFINE, views) * y).sum())
    rhs = float((x * backproject_triton(y, AFFINE, views, SHAPE)).sum())
    assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + 1.0), f"float32: {lhs} != {rhs}"


def check_autograd_matches_reference() -> None:
    import torch

    from xfit.projector import project
    from xfit.projector.triton import project_triton

    torch.manual_seed(3)
    views = _views("cone")
    weight = torch.randn(2, 2, 4, 5)
    grads = []
    for fn in (project_triton, lambda *a: project(*a, backend="reference")):
        mu = torch.rand(2, 1, *SHAPE, generator=torch.Generator().manual_seed(4)).requires_grad_()
        (fn(mu, _affine(2, torch.float32), views) * weight).sum().backward()
        grads.append(mu.grad)
    _close(grads[0], grads[1], 1e-5)


def check_gradcheck() -> None:
    import torch

    from xfit.geometry import View
    from xfit.projector.triton import backproject_triton, project_triton

    views = [View(30.0, sdd_mm=100.0, sod_mm=60.0, shape=(1, 2), pixel_spacing_mm=(2.0, 2.0))]
    eye = torch.eye(4, dtype=torch.float64)
    mu = torch.rand(1, 1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m: project_triton(m, eye, views, n_samples=2), (mu,))
    y = torch.randn(1, 1, 1, 2, dtype=torch.float64, requires_grad=True)
    bp = lambda im: backproject_triton(im, eye, views, (3, 2, 2), n_samples=2)
    assert torch.autograd.gradcheck(bp, (y,))


def check_geometry_grad_falls_back_to_reference() -> None:
    import torch

    from xfit.geometry import make_rays
    from xfit.projector import reference
    from xfit.projector.triton import project_triton

    torch.manual_seed(5)
    views = _views("cone")
    mu = torch.rand(1, 1, *SHAPE)
    angles = torch.tensor([0.0, 63.0], requires_grad=True)
    got = project_triton(mu, AFFINE, views, angle_deg=angles)
    got.sum().backward()
    assert angles.grad is not None and float(angles.grad.abs().sum()) > 0
    angles2 = angles.detach().clone().requires_grad_()
    want = reference.project_rays(mu, AFFINE, make_rays(views, angle_deg=angles2))
    want.sum().backward()
    _close(got.detach(), want.detach(), 1e-6)
    _close(angles.grad, angles2.grad, 1e-5)


def check_n_samples_and_errors() -> None:
    import torch

    from xfit.errors import GeometryError, InputError
    from xfit.geometry import make_rays
    from xfit.projector.triton import available, backproject_triton, project_triton, voxel_rays

    assert available()
    views = _views("cone")
    mu = torch.rand(1, 1, *SHAPE)
    vr = voxel_rays(make_rays(views), AFFINE, SHAPE)
    same = project_triton(mu, AFFINE, views, n_samples=vr.n_samples)
    _close(same, project_triton(mu, AFFINE, views), 1e-7)
    coarse = project_triton(mu, AFFINE, views, n_samples=3)
    assert float((coarse - same).abs().max()) > 1e-4, "n_samples had no effect"
    _close(project_triton(mu, AFFINE, views, n_samples=4 * vr.n_samples), same, 2e-2)
    for call, exc in (
        (lambda: project_triton(torch.rand(1, 2, *SHAPE), AFFINE, views), InputError),
        (lambda: project_triton(mu, torch.eye(3), views), GeometryError),
        (lambda: project_triton(mu, AFFINE, views, n_samples=0), InputError),
        (lambda: project_triton(mu, AFFINE, [], n_samples=1), GeometryError),
    ):
        try:
            call()
        except exc:
            continue
        raise AssertionError(f"expected {exc.__name__}")
    try:
        backproject_triton(torch.rand(1, 3, 4, 5), AFFINE, views, SHAPE)
    except InputError:
        pass
    else:
        raise AssertionError("wrong image shape accepted")


def check_cpu_without_interpreter_raises() -> None:
    import torch

    from xfit.errors import InputError
    from xfit.projector import triton as xt

    assert not xt.INTERPRET
    if torch.cuda.is_available():
        return
    assert not xt.available()
    try:
        xt.project_triton(torch.rand(1, 1, *SHAPE), AFFINE, _views("cone"))
    except InputError as exc:
        assert "CUDA" in str(exc)
    else:
        raise AssertionError("CPU tensors were accepted without the interpreter")


def check_kernels_compile_for_gpu() -> None:
    """Compile both kernels to sm_90 cubin (no GPU needed): catches what the interpreter allows."""
    import triton

    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as exc:  # another triton API
        raise _Skip(f"cannot compile ahead of time with this triton: {exc}") from exc
    from xfit.projector import triton as xt

    for kernel in (xt._forward_kernel, xt._adjoint_kernel):
        for fp in ("fp32", "fp64"):
            sig = {
                name: "constexpr" if name == "BLOCK" else f"*{fp}" if name.endswith("_ptr") else "i32"
                for name in kernel.arg_names
            }
            src = ASTSource(fn=kernel, signature=sig, constexprs={"BLOCK": xt.BLOCK_RAYS})
            try:
                compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
            except Exception as exc:
                if "ptxas" in str(exc).lower():
                    raise _Skip(f"no CUDA toolchain: {exc}") from exc
                raise
            assert "cubin" in compiled.asm


class _Skip(Exception):
    """Raised by a check that cannot run here; the pytest side skips."""


INTERPRETED = [
    "check_forward_matches_reference",
    "check_dispatcher_triton_backend",
    "check_adjoint_identity",
    "check_autograd_matches_reference",
    "check_gradcheck",
    "check_geometry_grad_falls_back_to_reference",
    "check_n_samples_and_errors",
]
COMPILED = ["check_cpu_without_interpreter_raises", "check_kernels_compile_for_gpu"]


def _main(names: list[str]) -> None:
    """Run the named checks; print a JSON map name -> None (passed) or the failure text."""
    results: dict[str, str | None] = {}
    for name in names:
        try:
            globals()[name]()
            results[name] = None
        except _Skip as exc:
            results[name] = f"SKIP {exc}"
        except Exception:  # noqa: BLE001 (any failure is reported in the results)
            results[name] = traceback.format_exc()
    print("RESULTS " + json.dumps(results))


# ----------------------------------------------------------------------------- pytest side


def _run(names: list[str], interpret: bool) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *names],
        env=env, capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"check subprocess failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULTS ") :])


def _outcome(results: dict[str, str | None], name: str) -> None:
    message = results[name]
    if message is not None and message.startswith("SKIP "):
        pytest.skip(message[5:])
    assert message is None, message


@pytest.fixture(scope="module")
def interpreted() -> dict[str, str | None]:
    return _run(INTERPRETED, interpret=True)


@pytest.fixture(scope="module")
def compiled() -> dict[str, str | None]:
    return _run(COMPILED, interpret=False)


@pytest.mark.parametrize("name", INTERPRETED)
def test_interpreted(interpreted, name):
    _outcome(interpreted, name)


@pytest.mark.parametrize("name", COMPILED)
def test_compiled(compiled, name):
    _outcome(compiled, name)


if __name__ == "__main__":
    _main(sys.argv[1:])
