"""Fakes of the agent/server contract, one implementation shared by every test double.

:mod:`.slots` models what a pod holds (the server's active/staged/previous versions and the agent's
versions on disk) and the rules of the operations on them, with the contract's error types; it
renders the contract's ``AdminState`` and ``AgentStatus``. The HTTP fakes (the fake pod of the local
cluster, the fake admin plane in the agent tests) and the planner simulation drive it.
"""
