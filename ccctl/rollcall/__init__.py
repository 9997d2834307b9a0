"""Roll-call: check that every bridge point can take part before a conference.

Probes (``probes``: TCP, SSH + ``ccctl-diag``) give one classified outcome per site
(``classify``), the runner (``runner``) fans them out over the fleet with retries and
SOFT/HARD/flapping (``state``), the pool (``pool``) keeps SSH logins warm between rounds,
``diagsession`` holds the persistent diagnostics session of a pooled box, ``fastssh`` is
the libssh2 engine of cold checks, ``history`` streams results into the registry and
``session`` ties it all to a recorded, judged run. Import the submodules: this package imports nothing, so that commands that only
read history do not load asyncssh.
"""
