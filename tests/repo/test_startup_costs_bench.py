"""``bench/startup_costs.py``: import costs timed in fresh interpreters."""

from __future__ import annotations

from bench_scripts import load_bench


def test_fresh_seconds_times_the_statement_not_its_setup():
    bench = load_bench("startup_costs")
    slow = bench.fresh_seconds("import time", "time.sleep(0.3)", reps=1)
    quick = bench.fresh_seconds("import time; time.sleep(0.3)", "pass", reps=1)
    assert 0.3 <= slow < 3.0 and quick < 0.1


def test_rows_follow_a_reconstruction_and_name_the_optimiser_import():
    bench = load_bench("startup_costs")
    labels = [label for label, _, _ in bench.ROWS]
    assert labels[:2] == ["numpy", "torch"] and any("torch._dynamo" in x for x in labels)
    for _, setup, stmt in bench.ROWS:
        compile(setup + "\n" + stmt, "<row>", "exec")  # each row is valid Python
