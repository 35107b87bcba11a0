"""The upload-and-ask web API: a thin FastAPI shell over ingest/ and runtime/."""
