"""The simulated fleet of bridge points used by the demo, tests and benchmarks.

Real asyncssh servers on loopback addresses, one per simulated site (``fleet``,
``endpoint``), with faults chosen from a seeded spec (``faults``), run in worker processes
(``control``, ``worker``); ``sshd`` runs a real OpenSSH server for the same checks. Import
the submodules: this package imports nothing, so ``ccctl sim status`` stays light.
"""
