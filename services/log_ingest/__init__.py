"""fnbus log_ingest service."""
