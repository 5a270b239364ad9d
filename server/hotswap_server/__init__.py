"""Hot-swappable reranker server.

Importing this package must stay cheap and torch-free: the agent imports
:mod:`hotswap_server.digest` and must never pull in torch or transformers.
"""

__version__ = "0.1.0"
