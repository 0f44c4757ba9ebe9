"""seqlvm: sequential latent-variable models trained with Ray and tracked in MLflow."""

__version__ = "0.1.0"
