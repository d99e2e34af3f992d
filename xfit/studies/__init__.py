"""Evaluation and studies: held-out runs, sweeps, shards, the generated results page."""

#: The generated results page and the folder of the committed run folders (relative to a checkout).
RESULTS_PAGE, RESULTS_DIR = "docs/results.md", "results"
