"""The operator page's pictures (docs/operator-page.md, "On call" and "Load"), drawn on the
server as inline SVG: no script, no asset from outside the package, nothing but what the
page's Content-Security-Policy allows (colours come from classes in ``page.css``, which has
a light and a dark set).

Pure: each function takes plain data and ``now`` and returns data or SVG text (Jinja2's
:class:`markupsafe.Markup`, every text in it escaped). The numbers behind the pictures are
computed here too (:func:`sent_per_day`, :func:`person_load`), so they can be tested as tables.

Sizes are SVG user units in a ``viewBox`` :data:`WIDTH` wide; the page scales a picture to
the width of its section (at most ``max-width`` in ``page.css``), so at 390 px the text of
:data:`FONT` units is about 11 px.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from markupsafe import Markup, escape

from bridge.rules.schedules import Schedule, Shift, shifts_between

#: The width of every picture, in SVG user units.
WIDTH = 600
#: Text size, in user units.
FONT = 19
#: How many colours ``page.css`` defines (classes ``c0`` ... ``c7``).
COLOURS = 8
#: Days the on-call picture shows, and the load pictures look back.
ONCALL_DAYS = 14
LOAD_DAYS = 30


def colour_of(people: Sequence[str]) -> dict[str, str]:
    """A colour class per name (``c0`` ...), in the order given, repeating after
    :data:`COLOURS`: the same person has the same colour in every picture of one page."""
    return {p: f"c{i % COLOURS}" for i, p in enumerate(dict.fromkeys(people))}


def _fits(text: str, width: float, font: float = FONT) -> bool:
    return len(text) * font * 0.6 <= width - 6


def _label(text: str, width: float) -> str:
    """``text`` when it fits in ``width`` units, else its initial when that fits, else ""."""
    if _fits(text, width):
        return text
    return text[:1] if _fits(text[:1], width) else ""


@dataclass(frozen=True)
class Row:
    """One schedule's row of the on-call picture: its pieces of the final view."""

    name: str
    shifts: tuple[Shift, ...]


def oncall_rows(schedules: Iterable[Schedule], start: datetime, days: int = ONCALL_DAYS
                ) -> list[Row]:
    """The rows of the on-call picture: for each schedule, the pieces of the final view that
    overlap ``[start, start + days)`` (aware)."""
    end = start + timedelta(days=days)
    return [Row(s.name, tuple(shifts_between(s, start, end))) for s in schedules]


def day_start(now: datetime, zone: tzinfo) -> datetime:
    """The local midnight (in ``zone``) that begins ``now``'s day, aware."""
    local = now.astimezone(zone)
    return datetime.combine(local.date(), time(), tzinfo=zone)


def oncall_svg(rows: Sequence[Row], start: datetime, now: datetime, zone: tzinfo,
               colours: Mapping[str, str], days: int = ONCALL_DAYS) -> Markup:
    """The on-call picture: a day axis (``zone``'s days from ``start``), then per schedule
    its name and one bar per shift (coloured by its first person, named when the name fits,
    hatched and outlined when an override), and a line at ``now``. Each bar has a ``<title>``
    (people, start, end in ``zone``)."""
    span = timedelta(days=days).total_seconds()
    axis, name_h, bar_h, gap = 52, 26, 40, 10
    height = axis + len(rows) * (name_h + bar_h + gap)

    def x(t: datetime) -> float:
        return max(0.0, min(WIDTH, (t - start).total_seconds() / span * WIDTH))

    out = [f'<svg class="chart oncall-chart" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="who is on call in the next {days} days" '
           'xmlns="http://www.w3.org/2000/svg">',
           '<defs><pattern id="hatch" width="8" height="8" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect class="hatch" width="3" height="8"/>'
           '</pattern></defs>']
    for d in range(days + 1):
        day = (start + timedelta(days=d)).astimezone(zone)
        day = datetime.combine(day.date(), time(), tzinfo=zone)
        dx = x(day)
        out.append(f'<line class="grid" x1="{dx:.1f}" y1="{axis - 6}" x2="{dx:.1f}" '
                   f'y2="{height}"/>')
        if d < days:
            mid = dx + WIDTH / days / 2
            out.append(f'<text class="axis" x="{mid:.1f}" y="18" font-size="17" '
                       f'text-anchor="middle">{f"{day:%a}"[:2]}</text>')
            out.append(f'<text class="axis" x="{mid:.1f}" y="40" font-size="{FONT + 1}" '
                       f'text-anchor="middle">{day.day}</text>')
    y = axis
    for row in rows:
        out.append(f'<text class="name" x="2" y="{y + name_h - 5}" font-size="{FONT + 2}">'
                   f'{escape(row.name)}</text>')
        top = y + name_h
        for sh in row.shifts:
            x0, x1 = x(sh.start), x(sh.end)
            if x1 - x0 < 0.5:
                continue
            who = ", ".join(sh.people)
            cls = colours.get(sh.people[0], "c0") if sh.people else "c0"
            title = (f"{who}: {sh.start.astimezone(zone):%m-%d %H:%M} → "
                     f"{sh.end.astimezone(zone):%m-%d %H:%M}"
                     + (" (override)" if sh.override else ""))
            kind = "bar override" if sh.override else "bar"
            out.append(f'<g class="{kind}" data-people="{escape(who)}"><title>'
                       f'{escape(title)}</title>'
                       f'<rect class="{cls}" x="{x0 + 1:.1f}" y="{top}" '
                       f'width="{max(x1 - x0 - 2, 0.5):.1f}" height="{bar_h}" rx="4"/>')
            if sh.override:
                out.append(f'<rect class="ov" x="{x0 + 1:.1f}" y="{top}" '
                           f'width="{max(x1 - x0 - 2, 0.5):.1f}" height="{bar_h}" rx="4" '
                           'fill="url(#hatch)"/>')
            label = _label(who, x1 - x0)
            if label:
                out.append(f'<text class="on-bar" x="{x0 + 5:.1f}" y="{top + bar_h - 13}" '
                           f'font-size="{FONT + 1}">{escape(label)}</text>')
            out.append("</g>")
        y += name_h + bar_h + gap
    nx = x(now)
    out.append(f'<line class="now" x1="{nx:.1f}" y1="{axis - 8}" x2="{nx:.1f}" '
               f'y2="{height}"/><title>now</title>')
    out.append("</svg>")
    return Markup("".join(out))


# -- load ------------------------------------------------------------------------------------
def sent_per_day(sent: Iterable[tuple[float, str]], now: datetime, zone: tzinfo,
                 days: int = LOAD_DAYS) -> tuple[list[date], dict[str, list[int]]]:
    """SMS sent per day and person over the ``days`` days ending with ``now``'s day (in
    ``zone``): ``sent`` is ``(UNIX seconds sent, who)`` pairs. Returns the days, oldest
    first, and per person (in order of most SMS first, then name) a count per day; what was
    sent before the first day is left out."""
    last = now.astimezone(zone).date()
    first = last - timedelta(days=days - 1)
    daylist = [first + timedelta(days=i) for i in range(days)]
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    for ts, who in sent:
        d = datetime.fromtimestamp(ts, zone).date()
        if first <= d <= last:
            counts[who][(d - first).days] += 1
    order = sorted(counts, key=lambda w: (-sum(counts[w]), w))
    return daylist, {w: counts[w] for w in order}


def sent_svg(daylist: Sequence[date], counts: Mapping[str, Sequence[int]],
             colours: Mapping[str, str]) -> Markup:
    """The stacked bar chart of :func:`sent_per_day`: one bar per day, one colour per person,
    the highest day's total written at the top left, every fifth day labelled (``MM-DD``).
    Each stack has a ``<title>`` listing the day's counts."""
    n = max(len(daylist), 1)
    top, plot, axis = 30, 150, 30
    height = top + plot + axis
    most = max([sum(c[i] for c in counts.values()) for i in range(len(daylist))] or [0])
    scale = plot / most if most else 0.0
    w = WIDTH / n
    out = [f'<svg class="chart sent-chart" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="SMS sent per day over the last {len(daylist)} days, by person" '
           'xmlns="http://www.w3.org/2000/svg">',
           f'<line class="grid" x1="0" y1="{top + plot}" x2="{WIDTH}" y2="{top + plot}"/>',
           f'<text class="axis" x="2" y="{top - 8}" font-size="{FONT}">'
           f'{"max " + str(most) + " a day" if most else "no SMS sent"}</text>']
    for i, day in enumerate(daylist):
        y = float(top + plot)
        parts = [f"{who} {c[i]}" for who, c in counts.items() if c[i]]
        out.append(f'<g class="day" data-day="{day.isoformat()}"><title>'
                   f'{escape(day.isoformat() + ": " + (", ".join(parts) or "none"))}</title>')
        for who, c in counts.items():
            if c[i]:
                h = c[i] * scale
                y -= h
                out.append(f'<rect class="{colours.get(who, "c0")}" x="{i * w + 1:.1f}" '
                           f'y="{y:.1f}" width="{w - 2:.1f}" height="{h:.1f}"/>')
        out.append("</g>")
        if i % 5 == 0 or i == n - 1:
            anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
            at = i * w + (0 if i == 0 else w if i == n - 1 else w / 2)
            out.append(f'<text class="axis" x="{at:.1f}" y="{height - 6}" '
                       f'font-size="{FONT - 1}" text-anchor="{anchor}">{day:%m-%d}</text>')
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class PersonLoad:
    """One person's last 30 days: ``pages`` (times paged: one per episode they were paged
    for), ``acknowledged`` (episodes they acknowledged) and ``median_ack`` (the median
    seconds from an episode's first page to their acknowledgement; ``None`` without any)."""

    person: str
    pages: int
    acknowledged: int
    median_ack: float | None


@dataclass(frozen=True)
class EpisodeLoad:
    """What :func:`person_load` needs of an episode: who was paged when (``(who, UNIX
    seconds)``), and who acknowledged it when (``None`` when nobody)."""

    paged: tuple[tuple[str, float], ...]
    acknowledged_by: str | None
    acknowledged_at: float | None


def person_load(episodes: Iterable[EpisodeLoad], since: float) -> list[PersonLoad]:
    """Per person, over the episodes first paged at or after ``since``: pages, episodes
    acknowledged and the median time to acknowledge (from the episode's first page). Most
    pages first, then by name."""
    pages: Counter[str] = Counter()
    acks: dict[str, list[float]] = defaultdict(list)
    for e in episodes:
        if not e.paged:
            continue
        first = min(at for _, at in e.paged)
        if first < since:
            continue
        for who, _ in e.paged:
            pages[who] += 1
        if e.acknowledged_by and e.acknowledged_at is not None:
            acks[e.acknowledged_by].append(max(e.acknowledged_at - first, 0.0))
    people = sorted(set(pages) | set(acks), key=lambda p: (-pages[p], -len(acks[p]), p))
    return [PersonLoad(p, pages[p], len(acks[p]),
                       statistics.median(acks[p]) if acks[p] else None) for p in people]


def duration_short(seconds: float | None) -> str:
    """``seconds`` as ``45s``, ``12m``, ``3h05m`` or ``2d04h``; ``-`` for ``None``."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def load_svg(rows: Sequence[PersonLoad], colours: Mapping[str, str]) -> Markup:
    """Per person one row: the name, a bar of pages (in the person's colour) with an inner
    bar of acknowledged episodes, and the counts and median time to acknowledge as text."""
    name_w, bars_w = 140, 260
    row_h = 46
    height = max(len(rows), 1) * row_h + 6
    most = max([r.pages for r in rows] + [r.acknowledged for r in rows] + [1])
    out = [f'<svg class="chart load-chart" viewBox="0 0 {WIDTH} {height}" role="img" '
           'aria-label="pages, acknowledged episodes and median time to acknowledge per '
           'person over the last 30 days" xmlns="http://www.w3.org/2000/svg">']
    if not rows:
        out.append(f'<text class="axis" x="2" y="{FONT + 6}" font-size="{FONT}">nobody was '
                   'paged</text>')
    for i, r in enumerate(rows):
        y = i * row_h + 4
        pw = bars_w * r.pages / most
        aw = bars_w * r.acknowledged / most
        keep = int(name_w / (FONT + 3) / 0.6) - 1
        name = r.person if _fits(r.person, name_w, FONT + 3) else r.person[:keep] + "…"
        title = (f"{r.person}: {r.pages} pages, {r.acknowledged} acknowledged, median "
                 f"{duration_short(r.median_ack)} to acknowledge")
        out.append(f'<g class="person" data-person="{escape(r.person)}"><title>'
                   f'{escape(title)}</title>'
                   f'<text class="name" x="2" y="{y + 29}" font-size="{FONT + 3}">'
                   f'{escape(name)}</text>')
        if pw:
            out.append(f'<rect class="{colours.get(r.person, "c0")}" x="{name_w}" y="{y + 4}" '
                       f'width="{pw:.1f}" height="{row_h - 12}" rx="3"/>')
        if aw:
            out.append(f'<rect class="acked" x="{name_w}" y="{y + 17}" width="{aw:.1f}" '
                       f'height="{row_h - 34}"/>')
        out.append(f'<text class="value" x="{name_w + bars_w + 8}" y="{y + 29}" '
                   f'font-size="{FONT + 2}">{r.pages} / {r.acknowledged} / '
                   f'{escape(duration_short(r.median_ack))}</text></g>')
    out.append("</svg>")
    return Markup("".join(out))
