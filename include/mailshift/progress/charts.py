"""Server-side inline SVG charts (no JavaScript, no CDN)."""

from __future__ import annotations

from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def line_chart(series: list[tuple[str, list[tuple[float, float]]]], *, title: str, y_label: str,
               width: int = 720, height: int = 260, y_max: float | None = None, x_fmt=None,
               y_fmt=lambda v: f"{v:.0f}", chart_id: str = "chart") -> str:
    """series: [(label, [(x, y), ...])], x as epoch seconds."""
    pad_l, pad_r, pad_t, pad_b = 60, 140, 28, 34
    pts = [p for _, s in series for p in s]
    out = [f'<svg id="{escape(chart_id)}" class="chart" role="img" aria-label="{escape(title)}" '
           f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" style="background:#fff;border:1px solid #ddd">',
           f'<text x="{pad_l}" y="18" font-size="13" font-weight="bold">{escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">no data yet</text>')
        out.append("</svg>")
        return "".join(out)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    if x1 <= x0:
        x1 = x0 + 1
    ytop = y_max if y_max is not None else max(p[1] for p in pts) or 1
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x):
        return pad_l + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return pad_t + ph - min(y, ytop) / ytop * ph

    for i in range(5):
        yv = ytop * i / 4
        y = sy(yv)
        out.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + pw}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{pad_l - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{escape(y_fmt(yv))}</text>')
    out.append(f'<text x="12" y="{pad_t + ph / 2}" font-size="10" transform="rotate(-90 12 {pad_t + ph / 2})" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    if x_fmt:
        for i in range(3):
            xv = x0 + (x1 - x0) * i / 2
            out.append(f'<text x="{sx(xv):.1f}" y="{height - 10}" font-size="10" text-anchor="middle">'
                       f'{escape(x_fmt(xv))}</text>')
    for k, (label, s) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        if s:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}">'
                       f'<title>{escape(label)}</title></polyline>')
            if len(s) == 1:
                out.append(f'<circle cx="{sx(s[0][0]):.1f}" cy="{sy(s[0][1]):.1f}" r="3" fill="{color}"/>')
        ly = pad_t + 14 * k + 8
        out.append(f'<rect x="{pad_l + pw + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{pad_l + pw + 24}" y="{ly + 1}" font-size="11">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar(fraction: float, width: int = 160, color: str = "#2ca02c") -> str:
    f = max(0.0, min(1.0, fraction or 0.0))
    return (f'<svg width="{width}" height="12" class="bar"><rect width="{width}" height="12" fill="#eee"/>'
            f'<rect width="{f * width:.1f}" height="12" fill="{color}"/></svg>')
