"""Ingest: read preference data from any supported source into the canonical pair table."""

from valind.ingest.stage import IngestResult, run_ingest

__all__ = ["IngestResult", "run_ingest"]
