"""Optional integrations with other engines; each needs its own extra.

- :mod:`samsar_async.integrations.ray`: batches on a Ray cluster (``samsar-async[ray]``).
"""
