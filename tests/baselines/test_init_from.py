"""``train-baseline --init-from``: fine-tuning starts from a trained network's weights (the
shipped one, say, for clinical-style augmentation), and refuses one it cannot start from."""

import json

import pytest
import yaml
from cli_helpers import assert_user_error
from cli_helpers import train_baseline as _train_baseline
from tiny_models import baseline_yaml, tiny_baseline

from xfit.baselines.registry import load_model
from xfit.baselines.train import INIT_FILE, MODEL_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fine_tuning_starts_from_the_given_network(tmp_path, ct_dir):
    cfg = baseline_yaml(tmp_path)
    first = tmp_path / "first"  # the start network: the same config from other random weights
    other = baseline_yaml(tmp_path / "other", seed=1)
    assert _train_baseline(ct_dir, first, "--config", other, "--max-steps", 2).exit_code == 0
    start = load_model(first / MODEL_FILE, "x2ct-cnn").model.state_dict()

    tuned = tmp_path / "tuned"
    res = _train_baseline(ct_dir, tuned, "--config", cfg, "--max-steps", 1, "--init-from", first / MODEL_FILE)
    assert res.exit_code == 0, res.output
    scratch = tmp_path / "scratch"
    assert _train_baseline(ct_dir, scratch, "--config", cfg, "--max-steps", 1).exit_code == 0
    after = load_model(tuned / MODEL_FILE, "x2ct-cnn")
    fresh = load_model(scratch / MODEL_FILE, "x2ct-cnn").model.state_dict()
    # one small step from the start network: far closer to it than the same run from
    # its own random weights
    dist = sum(float((after.model.state_dict()[k] - v).abs().sum()) for k, v in start.items())
    dist_fresh = sum(float((fresh[k] - v).abs().sum()) for k, v in start.items())
    assert dist < 0.2 * dist_fresh
    record = json.loads((tuned / INIT_FILE).read_text())
    assert record["path"].endswith(MODEL_FILE) and len(record["sha256"]) == 64 and record["images"] == 4
    assert after.meta["training"]["init_from"] == record
    # a resumed fine-tuning run keeps saying where it started
    assert _train_baseline(ct_dir, tuned, "--resume", "--max-steps", 2).exit_code == 0
    assert load_model(tuned / MODEL_FILE, "x2ct-cnn").meta["training"]["init_from"] == record


def test_init_from_refusals_are_one_line(tmp_path, ct_dir):
    cfg = baseline_yaml(tmp_path)
    first = tmp_path / "first"
    assert _train_baseline(ct_dir, first, "--config", cfg, "--max-steps", 2).exit_code == 0
    wide = tiny_baseline("x2ct-cnn").to_dict()
    wide["arch"] = {k: ([2 * x for x in v] if isinstance(v, list) else v) for k, v in wide["arch"].items()}
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(wide))
    res = _train_baseline(ct_dir, tmp_path / "a", "--config", tmp_path / "wide.yaml", "--init-from", first / MODEL_FILE)
    assert_user_error(res, "--init-from", "architecture")
    assert not (tmp_path / "a").exists()
    res = _train_baseline(ct_dir, tmp_path / "b", "--config", cfg, "--init-from", tmp_path / "missing.safetensors")
    assert_user_error(res, "missing.safetensors")
    before = (first / MODEL_FILE).read_bytes()
    res = _train_baseline(ct_dir, first, "--resume", "--init-from", first / MODEL_FILE)
    assert_user_error(res, "--init-from", "--resume")
    assert (first / MODEL_FILE).read_bytes() == before
