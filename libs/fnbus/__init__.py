"""fnbus shared library: configuration, message schemas, Kafka and database helpers."""

__version__ = "0.1.0"
