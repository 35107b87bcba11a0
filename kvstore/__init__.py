"""Persistent, tiered storage for KV pages and their summaries, keyed by chained content hashes."""
