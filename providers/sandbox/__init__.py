"""Simulated resellers: real HTTP servers that speak RunAPI's and API in One's wire formats.

The demo, the end-to-end and failover tests and the benchmarks run against these instead of the
paid services. Each simulated reseller is a Litestar app (:mod:`.runapi`, :mod:`.apiinone`) over
one shared in-memory engine (:mod:`.engine`): a task table whose tasks progress with time, a few
counters, and :class:`~.engine.Knobs` that inject the failures a real reseller shows (5xx, HTML
edge pages, 429, 402, content refusals, hangs, dropped connections).

Every simulated reseller also serves control endpoints under ``/_sandbox`` (no auth): ``GET
stats``, ``GET tasks`` (the accepted task ids), ``PUT knobs`` (a partial update), ``POST
reset`` and ``GET health``.

Run both from the command line with ``python -m providers.sandbox`` (see :mod:`.__main__`), or
in-process with :class:`~.server.Sandbox`. Nothing here imports ``gateway``.
"""
