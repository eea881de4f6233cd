"""Scoring an adapter at every (rank, rule): one interface per output type, metrics by name.

    metrics.py   the METRICS registry (exact_match, function, multiple_choice, loss), extractors
    generate.py  greedy generation (exact match, a user's function; what the pyfunc model serves)
    choice.py    multiple choice by log-likelihood (packed: one forward per question)
    loss.py      eval loss on the completion tokens
    ranks.py     evaluate_ranks: every function once, the RankCurve per rule

Import from the modules (this package imports nothing, so data/ can read metrics.py alone).
"""
