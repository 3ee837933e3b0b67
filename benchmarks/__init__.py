"""Benchmarks of the samsar-async client against a local canned server (see README.md)."""
