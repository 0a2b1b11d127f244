"""Peak resident memory (RSS) of this process from a chosen moment on: the CPU's memory meter.

A process's resident high-water mark (``VmHWM`` in ``/proc/self/status``; ``ru_maxrss``) only
ever grows, so a run that follows a bigger one in the same process would report the bigger
one's peak.  On Linux the mark can be reset to the current RSS by writing ``5`` to
``/proc/self/clear_refs``; :class:`RssMeter` does that when it starts, so that its reading is
the peak *during* the run (absolute: what was already resident when it started counts too).

Where the reset is impossible (no ``/proc``, or not writable) the reading is the process's
lifetime peak, labelled ``cpu-maxrss-cumulative``: an upper bound, not the run's own.

Example::

    meter = RssMeter()          # resets the high-water mark
    ...                         # the run
    peak_mb, method = meter.read()   # e.g. (812.4, "cpu-vmhwm-reset")
"""

from __future__ import annotations

import resource
import sys

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def status_mb(field: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` (kB in ``/proc/self/status``) in MiB, or None where unreadable."""
    try:
        with open(STATUS) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def maxrss_mb() -> float:
    """``ru_maxrss`` of this process in MiB (Linux: KiB; macOS: bytes): its lifetime peak, which
    on Linux also includes the parent's RSS at the moment this process was forked."""
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v / 2**20 if sys.platform == "darwin" else v / 1024


def reset_peak() -> bool:
    """Reset this process's resident high-water mark to its current RSS; True if it worked."""
    if status_mb("VmHWM") is None:
        return False
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class RssMeter:
    """Peak RSS from construction to :meth:`read`.  ``method`` says how it was measured:
    ``cpu-vmhwm-reset`` (high-water mark reset at the start: the run's own peak, absolute) or
    ``cpu-maxrss-cumulative`` (no reset possible: the process's lifetime peak)."""

    def __init__(self) -> None:
        self.reset = reset_peak()

    def read(self) -> tuple[float, str]:
        """``(peak_mb, method)``."""
        hwm = status_mb("VmHWM") if self.reset else None
        if hwm is None:
            return maxrss_mb(), "cpu-maxrss-cumulative"
        return hwm, "cpu-vmhwm-reset"
