"""The simulated fleet's fault model: which site misbehaves, and how, repeatable from a seed.

A fault spec is a comma-separated list of items (spaces around items are ignored; an empty
spec means no faults):

``KIND=PCT%`` or ``KIND=PCT%:ARG``
    give KIND to PCT percent of the sites, chosen by a RNG seeded with ``seed``
    (``down=2%``, ``slow=3%:800``). The count is rounded down but is at least one site
    when PCT > 0 and there are sites. Shares never overlap: a site gets at most one
    share-based fault, and the shares together may not exceed 100%.
``SITE_ID=KIND`` or ``SITE_ID=KIND:ARG``
    give KIND to that one site (``hn-01.xa-03=authfail``); it overrides any share.
    Site ids match ``[A-Za-z0-9._-]+``; the right side has no ``%``.
``seed=N``
    the RNG seed, a non-negative integer (default 0). ``seed`` is therefore not a site id.

Kinds: ``down`` (nothing listens: connection refused), ``blackhole`` (SYNs go unanswered:
connect times out), ``slow:MS`` (auth and diagnostics answers delayed by MS milliseconds),
``flap`` (every other connection is closed right after accept), ``authfail`` (every client key
is refused), ``hostkey`` (the served host key differs from the published one), ``nocam``,
``nomic``, ``diskfull`` (diagnostics report the fault), ``noagent`` (no ``ccctl-diag``: the
box answers the roll-call's ``sh`` fallback line instead), and, carried for the media stage only,
``loss:PCT`` and ``bwcap:KBPS``.

Example: ``down=2%,blackhole=1%,slow=3%:800,flap=1%,authfail=1%,hostkey=1%,nocam=2%,seed=7``.
Bad input raises ``ValueError`` with a one-line message naming the bad item.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction

DOWN = "down"
BLACKHOLE = "blackhole"
SLOW = "slow"
FLAP = "flap"
AUTHFAIL = "authfail"
HOSTKEY = "hostkey"
NOCAM = "nocam"
NOMIC = "nomic"
DISKFULL = "diskfull"
NOAGENT = "noagent"
LOSS = "loss"
BWCAP = "bwcap"

# Kinds that need an argument, with what it means; every other kind takes none.
ARG_KINDS: dict[str, str] = {SLOW: "milliseconds", LOSS: "percent", BWCAP: "kbps"}
KINDS: tuple[str, ...] = (
    DOWN, BLACKHOLE, SLOW, FLAP, AUTHFAIL, HOSTKEY, NOCAM, NOMIC, DISKFULL, NOAGENT, LOSS, BWCAP,
)

_SITE_ID_RE = re.compile(r"[A-Za-z0-9._-]+")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_SHARE_RE = re.compile(r"(?P<pct>\d+(?:\.\d+)?)%(?::(?P<arg>.*))?")


@dataclass(frozen=True)
class Fault:
    """One fault given to one site: its kind and, for slow/loss/bwcap, its argument."""

    kind: str
    arg: float | None = None

    def __str__(self) -> str:
        if self.arg is None:
            return self.kind
        return f"{self.kind}:{_fmt_number(self.arg)}"

    @property
    def slow_ms(self) -> int:
        """The delay in milliseconds this fault adds to answers (0 unless ``slow``)."""
        return int(self.arg or 0) if self.kind == SLOW else 0


@dataclass(frozen=True)
class Share:
    """A ``KIND=PCT%[:ARG]`` item: a kind given to a percentage of the sites."""

    fault: Fault
    pct: float


@dataclass(frozen=True)
class FaultSpec:
    """A parsed fault spec; ``assign`` turns it into a per-site mapping."""

    shares: tuple[Share, ...] = ()
    sites: dict[str, Fault] = field(default_factory=dict)
    seed: int = 0

    def assign(self, site_ids: list[str]) -> dict[str, Fault]:
        """Map each faulty site among ``site_ids`` to its fault; healthy sites are absent.

        Deterministic: the ids are sorted and deduplicated before the seeded shuffle, so the
        same spec and the same set of ids always give the same answer whatever their order.
        Per-site items naming ids not in ``site_ids`` are ignored.
        """
        ids = sorted(set(site_ids))
        order = list(ids)
        random.Random(self.seed).shuffle(order)
        result: dict[str, Fault] = {}
        start = 0
        for share in self.shares:
            count = share_count(share.pct, len(ids))
            for site_id in order[start:start + count]:
                result[site_id] = share.fault
            start += count
        known = set(ids)
        for site_id, fault in self.sites.items():
            if site_id in known:
                result[site_id] = fault
        return {site_id: result[site_id] for site_id in sorted(result)}


def share_count(pct: float, total: int) -> int:
    """How many of ``total`` sites a ``pct`` share covers: rounded down, at least one if pct>0."""
    if total <= 0 or pct <= 0:
        return 0
    exact = math.floor(Fraction(str(pct)) * total / 100)
    return min(total, max(1, exact))


def parse_fault(text: str, item: str | None = None) -> Fault:
    """Parse ``KIND`` or ``KIND:ARG`` into a Fault; ``item`` names the spec item in errors."""
    where = item if item is not None else text
    kind, sep, raw_arg = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r} in {where!r} (kinds: {', '.join(KINDS)})")
    if kind not in ARG_KINDS:
        if sep:
            raise ValueError(f"fault {kind!r} takes no argument, in {where!r}")
        return Fault(kind)
    raw_arg = raw_arg.strip()
    if not sep or not raw_arg:
        raise ValueError(f"fault {kind!r} needs :{ARG_KINDS[kind]}, e.g. {kind}:{_EXAMPLE[kind]}, "
                         f"in {where!r}")
    if not _NUMBER_RE.fullmatch(raw_arg):
        raise ValueError(f"bad {ARG_KINDS[kind]} {raw_arg!r} for {kind!r} in {where!r}")
    value = float(raw_arg)
    low, high = _ARG_RANGE[kind]
    if not low <= value <= high:
        raise ValueError(f"{ARG_KINDS[kind]} for {kind!r} must be between {_fmt_number(low)} "
                         f"and {_fmt_number(high)}, in {where!r}")
    return Fault(kind, value)


def parse_fault_spec(spec: str) -> FaultSpec:
    """Parse the fault spec syntax described in this module's docstring.

    Raises ValueError with a one-line message naming the offending item, so the CLI can show
    it as is.
    """
    shares: list[Share] = []
    sites: dict[str, Fault] = {}
    seed: int | None = None
    if not spec.strip():
        return FaultSpec()
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty item in fault spec {spec!r}")
        left, eq, right = item.partition("=")
        left, right = left.strip(), right.strip()
        if not eq or not left or not right:
            raise ValueError(f"bad fault item {item!r}: expected KIND=PCT%, SITE_ID=KIND or seed=N")
        if left.lower() == "seed":
            if seed is not None:
                raise ValueError(f"seed given twice, at {item!r}")
            if not right.isdigit():
                raise ValueError(f"bad seed {right!r} in {item!r}: expected a non-negative integer")
            seed = int(right)
            continue
        if "%" in right:
            shares.append(_parse_share(item, left, right))
            continue
        if not _SITE_ID_RE.fullmatch(left):
            raise ValueError(f"bad site id {left!r} in {item!r}: allowed are A-Z a-z 0-9 . _ -")
        if left in sites:
            raise ValueError(f"site {left!r} given a fault twice, at {item!r}")
        sites[left] = parse_fault(right, item)
    total = sum(Fraction(str(share.pct)) for share in shares)
    if total > 100:
        raise ValueError(f"fault shares add up to {_fmt_number(float(total))}%, more than 100%")
    return FaultSpec(shares=tuple(shares), sites=sites, seed=seed or 0)


def _parse_share(item: str, left: str, right: str) -> Share:
    """Parse the ``KIND=PCT%[:ARG]`` item ``item`` already split at ``=``."""
    kind = left.lower()
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {left!r} in {item!r} (kinds: {', '.join(KINDS)})")
    match = _SHARE_RE.fullmatch(right)
    if match is None:
        raise ValueError(f"bad share {right!r} in {item!r}: expected PCT% or PCT%:ARG")
    pct = float(match["pct"])
    if pct > 100:
        raise ValueError(f"share {match['pct']}% over 100% in {item!r}")
    arg = match["arg"]
    fault = parse_fault(kind if arg is None else f"{kind}:{arg}", item)
    return Share(fault=fault, pct=pct)


def _fmt_number(value: float) -> str:
    """Show 800.0 as ``800`` and 0.5 as ``0.5``."""
    return str(int(value)) if float(value).is_integer() else str(value)


_EXAMPLE: dict[str, str] = {SLOW: "800", LOSS: "5", BWCAP: "512"}
_ARG_RANGE: dict[str, tuple[float, float]] = {
    SLOW: (1, 600_000),
    LOSS: (0, 100),
    BWCAP: (1, 10_000_000),
}
