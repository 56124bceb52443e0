"""Benchmarks: the gateway against the simulated resellers, measured from outside.

``make bench`` (``python -m benchmarks``) starts the simulated resellers, a redis-server and the
gateway as separate processes, drives them with a load generator in processes of its own (wrk
when it is on PATH, else :mod:`benchmarks.httpload`), prints one table and writes
``benchmarks/RESULTS.md``.

- :mod:`.processes`: starting, watching and always stopping the processes under test;
- :mod:`.httpload`: the pure-Python load generator (one process; raw HTTP/1.1 over uvloop);
- :mod:`.wrk`: driving wrk with a generated Lua script;
- :mod:`.load`: the load spec and result shared by both tools, and picking a tool;
- :mod:`.scenarios`: what is measured, (a)-(d) and the fixed-rate overhead run;
- :mod:`.memory`: (e) Redis memory per stored task;
- :mod:`.report`: targets, the table and ``RESULTS.md``.

Everything talks to 127.0.0.1 only, and every run is bounded in time.
"""
