"""Meetings: a conference planned for a time and an audience of sites, checked before, reported after.

``plan`` stores a meeting and resolves its audience once; ``scheduler.tick`` runs the
pre-checks (roll-calls of the audience) when due; ``readiness`` and ``attendance`` turn
roll-call results and broadcast events into the operators' reports; ``printable`` writes them
as one self-contained HTML page. Nothing here sleeps or reads the clock on its own: every
function that depends on the time takes ``now``.
"""
