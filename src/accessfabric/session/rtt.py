"""Round-trip time estimation as in RFC 6298, plus the path minimum."""

from __future__ import annotations

MIN_RTO = 0.2
MAX_RTO = 60.0


class RttEstimator:
    """Smoothed RTT (``srtt``), variation (``rttvar``) and the minimum seen (``min_rtt``)."""

    __slots__ = ("latest", "min_rtt", "rttvar", "samples", "srtt")

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt: float | None = None
        self.latest: float | None = None
        self.samples = 0

    def update(self, sample: float) -> None:
        if sample < 0:
            return
        self.samples += 1
        self.latest = sample
        if self.min_rtt is None or sample < self.min_rtt:
            self.min_rtt = sample
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample

    @property
    def rto(self) -> float:
        """Retransmission-style timeout: srtt + 4 * rttvar, clamped to [0.2 s, 60 s]."""
        if self.srtt is None:
            return 1.0
        return min(MAX_RTO, max(MIN_RTO, self.srtt + 4 * self.rttvar))
