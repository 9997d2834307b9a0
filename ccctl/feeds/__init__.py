"""Data feeds from the national platforms: fetched, parsed, validated, joined to the official
units and kept as history per indicator, unit and day.

A pull is all or nothing: ``pull.pull_feed`` either stores every value of the new data or
keeps the last good data and records why it did not (``FeedError``, the feed's last error,
an event). The modules are split by object: ``spec`` (definitions), ``fetch``/``http`` (bytes
from a file, a folder or a URL), ``tables``/``ncsc`` (bytes to rows), ``values`` and ``dates``
(validation), ``join`` (names and codes to units), ``alerts``, ``pull`` and ``views``.
"""
