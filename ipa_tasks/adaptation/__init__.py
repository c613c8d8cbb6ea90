"""The adaptation loop, one tick at a time: observe the load, forecast its peak over the horizon, solve for a
plan, diff it against what runs, apply the steps, verify, record. The ``ipa_adapt`` DAG runs one task per
step (:mod:`.steps`); :mod:`.decisions` keeps the record (a table per pipeline and day, and MLflow).
"""
