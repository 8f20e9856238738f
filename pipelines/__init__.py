"""Exactly-once streaming lakehouse pipeline: Kafka -> Spark Structured Streaming -> Delta Lake."""

__version__ = "0.1.0"
