"""fnbus invoker service."""
