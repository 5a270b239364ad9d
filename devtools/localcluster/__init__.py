"""A local Kubernetes-like cluster on loopback: kmock as the API, real or fake pods, the real operator.

Nothing heavy is imported here (no torch): the pods are separate processes.
"""
