"""The serving runtime of the embedded default (issue 5, in progress): stage servers (one process per
replica: one variant of one stage, dynamic batching, ``/readyz``, Prometheus metrics, live batch-size
changes), the router (the pipeline's entry point: stages in order, replicas changed at run time, drops, the
per-second request counts the adaptation loop reads) and the load generator (a replayed Twitter-trace
window, every request recorded). What is still to come: the local target that starts and stops replicas
for ``ipa_adapt``, and the one-command demo."""
