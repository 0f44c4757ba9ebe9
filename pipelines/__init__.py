"""Ingestion: corpus readers per modality, Parquet sharding with manifests, and the Ray Data streaming side."""
