"""Index server: real-time capitalisation-weighted indices from the engine's trades.

Modules: ``definitions`` (configuration and the ``IndexValue`` record), ``calc`` (the pure,
exact calculator), ``service`` (replication stream in, publication out), ``publish`` (hooks and
subscriptions), ``http`` (vendor API), ``main`` (the ``bourse index`` process).
See spec/index-vendor-api.md.
"""
