"""hotswap-agent: the per-pod sidecar that stages model weights and drives its server's admin plane.

It never imports torch or transformers: it starts fast and stays small. See ``docs/agent.md``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
