"""fnbus gateway service."""
