"""Optional integrations with other engines; each needs its own extra.

- :mod:`samsar_async.integrations.ray`: batches on a Ray cluster (``samsar-async[ray]``).
- :mod:`samsar_async.integrations.starlette`: server-sent events for Starlette and
  FastAPI (``samsar-async[starlette]``).
- :mod:`samsar_async.integrations.otel`: OpenTelemetry spans and metrics for a
  client's calls (``samsar-async[otel]``).
"""
