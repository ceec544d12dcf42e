"""Benchmarks of imagegen-serverless against the S3 floor and a naive handler: ``make bench`` (``python -m bench.run``)."""
