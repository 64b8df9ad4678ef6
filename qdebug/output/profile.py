"""``qdebug trace --profile``: where a trace's time went, phase by phase."""

from __future__ import annotations

from collections.abc import Mapping

#: Phases measured inside another (``trace: …`` inside ``trace``): indented, not summed.
SUB = "trace: "


def profile_lines(timings: Mapping[str, float]) -> list[str]:
    """One line per phase with its wall seconds and its share of the whole; the loop's split
    (interpreters in their worker thread, the main thread's waits, statistics and writes)
    under it. The interpreters run beside the statistics, so the split can add up to more
    than the loop."""
    total = sum(s for name, s in timings.items() if not name.startswith(SUB))
    lines = ["profile (wall seconds):"]
    for name, seconds in timings.items():
        share = f"{100 * seconds / total:4.0f}%" if total > 0 else "   –"
        label = f"    {name[len(SUB):]}" if name.startswith(SUB) else f"  {name}"
        lines.append(f"{label:<40} {seconds:8.2f} s  {share}")
    lines.append(f"  {'total':<38} {total:8.2f} s")
    return lines
