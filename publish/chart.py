"""A balance-over-time chart as plain inline SVG: no script, no library.

Integer arithmetic only: balances are integer units of ``10**-scale``,
times are whole milliseconds; pixel positions are integer divisions.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from ledger.rules.fund import amount_str

from . import present

W, H = 760, 260  # viewBox
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 30, 34  # margins for the axis labels


def _nice_step(max_units: int, ticks: int = 4) -> int:
    raw = max(1, -(-max_units // ticks))
    p = 10 ** (len(str(raw)) - 1)
    for m in (1, 2, 5, 10):
        if m * p >= raw:
            return m * p
    return 10 * p  # pragma: no cover


def _ms(t: datetime) -> int:
    return int(t.timestamp()) * 1000 + t.microsecond // 1000


def _time_label(t_ms: int, span_ms: int) -> str:
    t = datetime.fromtimestamp(t_ms // 1000, tz=timezone.utc)
    if span_ms > 3 * 86400_000:
        return t.strftime("%Y-%m-%d")
    if span_ms > 3 * 3600_000:
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%H:%M:%S")


def balance_svg(points: list[tuple[datetime, int]], scale: int, currency: str, title: str) -> str:
    """An SVG step chart of ``(time, balance units)`` points in log order
    (the balance holds from one point to the next)."""
    desc = f"{title}: {len(points)} points"
    head = (f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title chart-desc" '
            f'xmlns="http://www.w3.org/2000/svg"><title id="chart-title">{escape(title)}</title>'
            f'<desc id="chart-desc">{escape(desc)}</desc>')
    if not points:
        return (head + f'<text x="{W // 2}" y="{H // 2}" text-anchor="middle" class="chart-empty">'
                "No movements yet</text></svg>")
    times = [_ms(t) for t, _ in points]
    # times may repeat or (if the operator gave them so) go back: plot in log
    # order, clamped so that the line never runs backwards
    for i in range(1, len(times)):
        times[i] = max(times[i], times[i - 1])
    t0, t1 = times[0], times[-1]
    span = max(1, t1 - t0)
    top = max(max(v for _, v in points), 1)
    step = _nice_step(top)
    ymax = -(-top // step) * step
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: int) -> int:
        return LEFT + (t - t0) * pw // span if t1 > t0 else LEFT + pw

    def y(v: int) -> int:
        return TOP + (ymax - max(v, 0)) * ph // ymax

    out = [head]
    # horizontal grid and y labels
    for tick in range(0, ymax + 1, step):
        yy = y(tick)
        label = present.amount(amount_str(tick, scale), 0)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{yy}" x2="{W - RIGHT}" y2="{yy}"/>')
        out.append(f'<text class="ylabel" x="{LEFT - 8}" y="{yy + 4}" text-anchor="end">{escape(label)}</text>')
    out.append(f'<text class="unit" x="{LEFT}" y="{TOP - 14}" text-anchor="start">{escape(currency)}</text>')
    # x labels: first, middle, last
    bottom = TOP + ph
    marks = [(t0, "start"), (t1, "end")] if t1 > t0 else [(t0, "end")]
    if t1 - t0 > 0:
        marks.insert(1, (t0 + (t1 - t0) // 2, "middle"))
    for t, anchor in marks:
        out.append(f'<text class="xlabel" x="{x(t)}" y="{bottom + 20}" text-anchor="{anchor}">'
                   f"{escape(_time_label(t, span))}</text>")
    out.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{W - RIGHT}" y2="{bottom}"/>')
    # the step line and the area under it
    xs = [x(t) for t in times]
    ys = [y(v) for _, v in points]
    d = [f"M{xs[0]} {ys[0]}"]
    for i in range(1, len(points)):
        d.append(f"H{xs[i]}V{ys[i]}")
    line = "".join(d)
    out.append(f'<path class="area" d="{line}V{bottom}H{xs[0]}Z"/>')
    out.append(f'<path class="line" d="{line}"/>')
    last_v = points[-1][1]
    out.append(f'<circle class="last" cx="{xs[-1]}" cy="{ys[-1]}" r="4">'
               f"<title>{escape(present.amount(amount_str(last_v, scale)))} {escape(currency)}</title></circle>")
    out.append("</svg>")
    return "".join(out)
