"""fnbus scheduler service."""
