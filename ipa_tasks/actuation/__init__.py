"""Applying plans to where the pipeline runs: what runs now, the ordered steps from it to a plan, and the
targets that carry the steps out (Kubernetes through the cncf-kubernetes provider, or the local runtime).

:mod:`.config` says what a stage runs and orders the steps of a change; :mod:`.target` is the interface
every target implements and the one apply procedure (steps in order, rollback on failure, read back);
:mod:`.kubernetes` and :mod:`.local` are the targets.
"""
