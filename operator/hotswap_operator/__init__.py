"""hotswap-operator: a kopf operator rolling reranker model versions out to pods, one at a time."""

__version__ = "0.1.0"
