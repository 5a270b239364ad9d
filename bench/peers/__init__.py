"""Other rerank servers measured next to Hotswap in the same run (each in its own environment)."""
