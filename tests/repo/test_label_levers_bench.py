"""``bench/label_levers.py``: every candidate label of the fit scored on the same fit (shipped
prior and network, a shortened fit, one development phantom)."""

from __future__ import annotations

from bench_scripts import load_bench

SHORT = "warm_steps: 2\ninit_network_steps: 2\ninit_network_fine_steps: 2\nconsistency_steps: 0\nearly_stop_tol: 0.0\n"


def test_label_levers_scores_each_label_and_the_oracle_segmenter(tmp_path, capsys):
    cfg = tmp_path / "short.yaml"
    cfg.write_text(SHORT)
    bench = load_bench("label_levers")
    args = ["--first-seed", "100", "--phantoms", "1", "--threads", "1", "--fit-config", str(cfg)]
    extra = ["--extra-networks", "xctrsnet"]
    assert bench.main(args + ["--thresholds", "0.4,0.5", "--label-weights", "0.75"] + extra) == 0
    out = capsys.readouterr().out
    table = {
        line[:36].strip(): line[36:].split() for line in out.split("start network")[1].splitlines()[2:] if line.strip()
    }
    labels = ("prior", "network", "mix(prior, network)", "seg(fit)", "mix@0.75(prior, network)")
    labels += ("mix(prior, seg(fit))", "mix3", "ens1", "mix(prior, ens1)", "seg(truth)")
    rows = tuple(f"{k} >{t}{cc}" for k in labels for t in ("0.4", "0.5") for cc in ("", " +cc"))
    assert sorted(table) == sorted(rows)
    dice = {k: float(v[0]) for k, v in table.items()}
    assert all(0.0 <= d <= 1.0 for d in dice.values())
    assert float(table["prior >0.5"][1]) == 0.0  # the reference row
    # the segmentation head on the true CT is the oracle: it must see the vertebra well
    assert dice["seg(truth) >0.5"] > 0.8 and dice["seg(truth) >0.5"] > dice["prior >0.5"]
