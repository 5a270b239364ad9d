"""End-to-end: one scenario (``e2e.scenario``), two backends (``e2e.backends.local``: the local
cluster of loopback pods; ``e2e.backends.kind``: a kind cluster with the Helm chart).

``python -m e2e local`` runs it here; ``e2e/kind/run.sh`` runs it on kind. See ``e2e/README.md``.
"""
