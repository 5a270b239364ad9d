"""Hot-swappable reranker server.

Importing this package must stay cheap and torch-free (``hotswap-server --help`` needs no torch).
What the agent and the operator share with the server lives in :mod:`hotswap_contract`.
"""

__version__ = "0.1.0"
