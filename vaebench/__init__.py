"""vaebench: how sensitive are VAEs to their hyper-parameters on gene-expression data."""

__version__ = "0.1.0"
