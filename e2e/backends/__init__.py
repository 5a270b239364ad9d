"""Backends of the end-to-end scenario: ``local`` (the local cluster here) and ``kind``."""
