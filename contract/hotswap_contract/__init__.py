"""What the server, the agent and the operator must agree on, in one torch-free package.

- :mod:`.versions`: the version-id rule; :mod:`.wire`: header names and the error body;
- :mod:`.digest`: the content digest of a version folder;
- :mod:`.agent`: the agent's status and operation requests (camelCase, Kubernetes style);
- :mod:`.admin`: the server's admin-plane state and requests (snake_case, like the TEI-style data plane).
- :mod:`.retry` and :mod:`.settings`: not wire contract but the two patterns the processes share
  (capped, jittered backoff with a deadline; flags over ``HOTSWAP_*`` variables over defaults).

The agent emits these models, the operator parses them, the fakes in ``devtools`` serve them, and the
OpenAPI documents take their schemas from them (:func:`hotswap_contract.schema.components`).
``docs/contract.md`` states the contract in prose.
"""
