"""What a NAT reflector answers (issue 22, ADR 0032 amendment): sans-IO, time passed in.

A reflector (``node/dialing/nat_probe.py``, ``[nat] listen``) answers STUN Binding requests over
bare UDP, where the source address can be forged.  So that it is no use to an attacker:

* **No amplification**: a request shorter than ``PADDED_SIZE`` (64 bytes) is ignored
  without an answer.  The largest answer is 44 bytes (``LARGEST_SUCCESS``, an IPv6
  mapped address), so a reflector never sends more bytes than it received.  The probe
  pads its requests with a PADDING attribute (RFC 5780 section 7.6).
* **Per-source rate**: each source — an IPv4 address, or an IPv6 /64 (one host holds a
  whole /64) — has its own token bucket (``SOURCE_RATE`` a second, ``SOURCE_BURST``),
  held in an LRU of at most ``MAX_SOURCES``.  One sender, flooding or forged as its
  victim, gets at most that many answers a second; other sources are not starved.
  A forged source can aim answers at any address, but never more than one source's
  rate per address (or /64), never larger than the requests.
* **Redirected answers cost more**: an answer to a RESPONSE-PORT (another port of the
  asker's address) costs ``REDIRECT_COST`` tokens of the asker's bucket, and all of
  them together are capped at ``REDIRECT_RATE`` a second: it is the one request that
  sends an answer where the asker did not send from.
* **Global cap**: at most ``GLOBAL_RATE`` answers a second in all.  A per-source bucket
  is spent before the global one is asked, so one source's excess never reaches it.
  Someone forging many sources can still spend the global budget (each new source
  starts with a full bucket), which bounds what the reflector sends, not who gets it.

A node's probe sends a reflector at most 3 plain and 3 redirected requests per probe
(``TRIES``): 3 + 3 x 4 = 15 tokens, so two nodes behind one NAT address probing at the
same moment fit in one burst (40).
"""

from __future__ import annotations

import ipaddress

from accessfabric.identity.ratelimit import KeyedRateLimiter, TokenBucket
from accessfabric.wire.stun import PADDED_SIZE, BindingRequest

GLOBAL_RATE = 200.0
"""Answers a second the reflector sends at most, all sources together (a burst of as many)."""
SOURCE_RATE = 10.0
"""Answers a second one source (IPv4 address, IPv6 /64) gets at most."""
SOURCE_BURST = 40.0
"""Tokens one source may spend at once (a new source starts full)."""
REDIRECT_COST = 4.0
"""Tokens of the asker's bucket an answer to its RESPONSE-PORT costs (a plain one: 1)."""
REDIRECT_RATE = 50.0
"""RESPONSE-PORT answers a second, all sources together (a burst of as many)."""
MAX_SOURCES = 4096
"""Per-source buckets kept; the least recently used goes first (``evicted`` counts those
that were still draining)."""

TOO_SMALL = "too small"
SOURCE_LIMITED = "source rate"
REDIRECT_LIMITED = "redirect rate"
GLOBAL_LIMITED = "rate"
REASONS = (TOO_SMALL, SOURCE_LIMITED, REDIRECT_LIMITED, GLOBAL_LIMITED)
"""Why a request was not answered (``ReflectorLimits.admit``), stable labels."""


def source_key(host: str) -> str:
    """The bucket a source address spends from: an IPv4 address (an IPv4-mapped IPv6
    address counts as IPv4), the /64 of an IPv6 address; anything else as given."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ReflectorLimits:
    """The reflector's decision per request: answer (None) or why not (``REASONS``)."""

    def __init__(
        self,
        *,
        min_request: int = PADDED_SIZE,
        rate: float = GLOBAL_RATE,
        source_rate: float = SOURCE_RATE,
        source_burst: float = SOURCE_BURST,
        redirect_cost: float = REDIRECT_COST,
        redirect_rate: float = REDIRECT_RATE,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.min_request = min_request
        self.rate = rate
        self.redirect_cost = redirect_cost
        self.sources = KeyedRateLimiter(source_rate, source_burst, max_sources)
        self._global = TokenBucket(rate, rate)
        self._redirect = TokenBucket(redirect_rate, redirect_rate)
        self.answered = 0
        self.dropped = dict.fromkeys(REASONS, 0)

    def admit(self, size: int, request: BindingRequest, source: str, now: float) -> str | None:
        """Whether to answer ``request`` (``size`` bytes on the wire, from ``source``, the
        address without the port) at ``now``: None, or the reason it is dropped."""
        reason = self._decide(size, request, source, now)
        if reason is None:
            self.answered += 1
        else:
            self.dropped[reason] += 1
        return reason

    def _decide(self, size: int, request: BindingRequest, source: str, now: float) -> str | None:
        if size < self.min_request:
            return TOO_SMALL
        redirected = request.response_port is not None
        cost = self.redirect_cost if redirected else 1.0
        if not self.sources.take(source_key(source), now, cost):
            return SOURCE_LIMITED
        if redirected and self._redirect.tokens(now) < 1:
            return REDIRECT_LIMITED
        if not self._global.take(now):
            return GLOBAL_LIMITED
        if redirected:
            self._redirect.take(now)
        return None
