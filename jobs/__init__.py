"""Celery batch analyses over many documents: a thin shell over ingest/ and runtime/."""
