"""fnbus registry service."""
