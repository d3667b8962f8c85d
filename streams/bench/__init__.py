"""The benchmark harness behind ``paybus bench`` (entry point: :func:`streams.bench.runner.main`).

Modules: ``runner`` (orchestration, progress, table, JSON), ``baselines`` (raw aiokafka,
Faust's ceiling, the plain loop), ``stages`` (the bus's stages as workers, and scale-out),
``latency``, ``memory``, ``report`` (rows, targets, output), ``procs``/``kafka_io``/``data``
(shared plumbing), ``faust_sink`` (the consume-only worker).
"""
