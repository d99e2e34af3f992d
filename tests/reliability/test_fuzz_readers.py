"""Hypothesis fuzz tests of the sidecar and config readers (issue 12): whatever the content, a
reader returns a value that obeys the schema or raises one xfit error, never anything else."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfit.errors import XfitError
from xfit.fitting.config import BOOLS, FLOAT_RANGES, INT_RANGES, FitConfig, fit_config_from_dict
from xfit.geometry import MAX_ANGLE_DEG, MAX_DISTANCE_MM, SIDECAR_KEYS, SIDECAR_OPTIONAL_KEYS, View, validate_sidecar
from xfit.io import parse_json_strict, read_xray, read_yaml_mapping, write_xray
from xfit.prior.config import PriorConfig, load_config

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["false", "true", "cone", "parallel", "1e3", "nan", "yes"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)
sidecar_keys = st.sampled_from(SIDECAR_KEYS + SIDECAR_OPTIONAL_KEYS + ("colour", "angle", ""))
VALID_SIDECAR = View(angle_deg=0.0, shape=(4, 4)).to_sidecar(line_integral_scale=10.0)
# random dictionaries, and valid sidecars with one or two keys changed (reach the deeper checks)
sidecars = st.one_of(
    st.dictionaries(sidecar_keys, values, max_size=8),
    st.dictionaries(sidecar_keys, values, min_size=1, max_size=2).map(lambda d: {**VALID_SIDECAR, **d}),
)


def _check_clean_sidecar(out):
    for key, value in out.items():
        if value is None:
            continue
        if key in ("flip_lr", "invert"):
            assert isinstance(value, bool)
        elif key == "angle_deg":
            assert not isinstance(value, bool) and math.isfinite(value) and abs(value) <= MAX_ANGLE_DEG
        elif key in ("sdd_mm", "sod_mm"):
            assert not isinstance(value, bool) and 0 < value <= MAX_DISTANCE_MM
        elif key == "pixel_spacing_mm":
            assert len(value) == 2 and all(0 < v <= 100 and not isinstance(v, bool) for v in value)
        elif key == "projection":
            assert value in ("cone", "parallel")


@FUZZ
@given(sidecars)
def test_validate_sidecar_fuzz(data):
    try:
        out = validate_sidecar(data)
    except XfitError:
        return
    _check_clean_sidecar(out)
    try:
        view = View.from_sidecar(
            {k: v for k, v in out.items() if k not in ("flip_lr", "invert", "line_integral_scale", "shape")},
            (4, 4),
            angle_deg=0.0,
        )
    except XfitError:
        return
    assert math.isfinite(view.angle_deg) and view.sdd_mm > 0


@FUZZ
@given(st.one_of(st.text(max_size=200), sidecars.map(lambda d: json.dumps(d, allow_nan=True))))
def test_read_sidecar_text_fuzz(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("fz")
    view = View(angle_deg=0.0, shape=(4, 4))
    write_xray(folder / "ap.png", np.ones((4, 4)), view)
    (folder / "ap.json").write_text(text, encoding="utf-8")
    try:
        xr = read_xray(folder / "ap.png", angle_deg=None)
    except XfitError:
        return
    assert xr.image.shape == (4, 4) and np.all(np.isfinite(xr.image))
    side = parse_json_strict(text)  # anything accepted was strict JSON with a valid schema
    _check_clean_sidecar(validate_sidecar(side))


fit_keys = st.sampled_from(sorted(set(FitConfig.__dataclass_fields__) | {"stepz", "Lr"}))


@FUZZ
@given(st.dictionaries(fit_keys, values, max_size=6))
def test_fit_config_fuzz(data):
    try:
        cfg = fit_config_from_dict(data)
    except XfitError:
        return
    _check_fit_config(cfg)


def _check_fit_config(cfg: FitConfig) -> None:
    """Every ranged number of an accepted fit config is in its range, every flag a bool."""
    for name, (lo, hi) in INT_RANGES.items():
        v = getattr(cfg, name)
        assert isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    for name, (lo, hi) in FLOAT_RANGES.items():
        v = getattr(cfg, name)
        assert isinstance(v, float) and math.isfinite(v) and lo <= v <= hi
    for name in BOOLS:
        assert isinstance(getattr(cfg, name), bool)


yaml_text = st.one_of(
    st.text(max_size=120),
    st.dictionaries(fit_keys, scalars, max_size=5).map(
        lambda d: "".join(f"{k}: {json.dumps(v) if not isinstance(v, str) else v}\n" for k, v in d.items())
    ),
)


@FUZZ
@given(yaml_text)
def test_fit_config_yaml_text_fuzz(tmp_path_factory, text):
    from xfit.fitting import load_fit_config

    path = tmp_path_factory.mktemp("fy") / "fit.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        read_yaml_mapping(path)
        cfg = load_fit_config(path)
    except XfitError:
        return
    _check_fit_config(cfg)  # accepted YAML obeys the schema like an accepted dict


BASE_PRIOR = load_config("tiny").to_dict()
prior_paths = st.sampled_from(
    [
        ("resolution",),
        ("spacing_mm",),
        ("hu_window",),
        ("name",),
        ("z_dim",),
        ("g_channels",),
        ("label_names",),
        ("training", "batch_size"),
        ("training", "betas"),
        ("training", "seed"),
        ("training", "ema_rampup"),
        ("training", "vertebra_labels"),
        ("training", "augment", "flip_lr"),
        ("training", "augment", "rotate_deg"),
        ("colour",),
    ]
)


@FUZZ
@given(st.lists(st.tuples(prior_paths, values), max_size=3))
def test_prior_config_fuzz(changes):
    d = json.loads(json.dumps(BASE_PRIOR))
    for path, value in changes:
        node = d
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    try:
        cfg = PriorConfig.from_dict(d)
    except XfitError:
        return
    assert isinstance(cfg.training.augment.flip_lr, bool)
    assert isinstance(cfg.resolution, int) and 8 <= cfg.resolution <= 1024
    assert math.isfinite(cfg.spacing_mm) and cfg.spacing_mm > 0
    assert all(math.isfinite(x) for x in cfg.hu_window)


@pytest.mark.parametrize("name", ["tiny", "64", "128"])
def test_shipped_configs_pass_the_schema(name):
    cfg = load_config(name)
    assert cfg.resolution == {"tiny": 32, "64": 64, "128": 128}[name]
    assert PriorConfig.from_dict(cfg.to_dict()) == cfg  # the schema takes back what it gave
