"""Prometheus metrics: the pod's state as the text format scrapers read.

`names` maps point names to metric families in base units, `collector`
builds every family from the daemon's live state at scrape time (so a point
that is gone, stale or bad is simply not there as a value), `http` serves
`/metrics` on the event loop, and `service` ties them to the daemon.
docs/metrics.md lists every family.
"""
