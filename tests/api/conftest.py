"""The server's in-process fixtures, for the API tests that need a running server."""

from tests.server.conftest import make_clients, token_file

__all__ = ["make_clients", "token_file"]
