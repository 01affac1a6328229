"""Charts as server-rendered SVG: no JavaScript chart library and no CDN on staff pages.
Every label goes through format_html, so text from the data is escaped."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#999")
OUTCOME_ORDER = (
    "resolved_in_message",
    "completed_by_agent",
    "escalated_with_context",
    "closed_by_rule",
    "writeback_failed",
    "abandoned",
    "cancelled",
    "open",
)


def _svg(width: int, height: int, title: str, body: SafeString) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" '
        'aria-label="{}" class="metrics-chart"><title>{}</title>{}</svg>',
        width,
        height,
        title,
        title,
        body,
    )


def _n(value: float) -> str:
    return f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def funnel_chart(steps: list[dict]) -> SafeString:
    """Horizontal bars, one per stage, scaled to the triggered count."""
    width, label_w, row_h = 720, 130, 30
    top = steps[0]["cases"] if steps else 0
    bar_w = width - label_w - 170
    rows = []
    for index, step in enumerate(steps):
        y = index * row_h
        length = bar_w * step["cases"] / top if top else 0
        rows.append(
            (
                y + 19,
                step["label"],
                label_w,
                y + 5,
                _n(max(length, 1 if step["cases"] else 0)),
                _n(label_w + length + 6),
                y + 19,
                f"{step['cases']:,}",
                _percent(step["conversion"]) if step["conversion"] is not None else "",
            )
        )
    body = format_html_join(
        "",
        '<text x="0" y="{}" font-size="13">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="20" fill="#0072B2"></rect>'
        '<text x="{}" y="{}" font-size="12">{} <tspan fill="#555">{}</tspan></text>',
        rows,
    )
    return _svg(width, len(steps) * row_h + 4, "Drop-off funnel", body)


def cohort_chart(cohorts: list[dict]) -> SafeString:
    """One stacked bar per week, split by where its cases ended, with a legend."""
    width, height, left, bottom, legend_h = 720, 240, 40, 40, 22
    if not cohorts:
        return _svg(width, 40, "Weekly cohorts", mark_safe('<text x="0" y="24">No cases.</text>'))
    tallest = max(cohort["cases"] for cohort in cohorts) or 1
    plot_h = height - bottom - legend_h
    slot = (width - left) / len(cohorts)
    bar = max(2.0, slot * 0.7)
    present = [name for name in OUTCOME_ORDER if any(name in c["outcomes"] for c in cohorts)]
    present += sorted({n for c in cohorts for n in c["outcomes"]} - set(present))
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(present)}
    parts = []
    for index, cohort in enumerate(cohorts):
        x = left + index * slot + (slot - bar) / 2
        y = legend_h + plot_h
        for name in present:
            count = cohort["outcomes"].get(name, 0)
            if not count:
                continue
            h = plot_h * count / tallest
            y -= h
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{}: {} {}</title></rect>",
                    _n(x),
                    _n(y),
                    _n(bar),
                    _n(h),
                    colour[name],
                    cohort["week_start"],
                    count,
                    name.replace("_", " "),
                )
            )
        if len(cohorts) <= 16 or index % max(1, len(cohorts) // 8) == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
                    _n(x + bar / 2),
                    height - bottom + 14,
                    cohort["week_start"][5:],
                )
            )
    parts.append(
        format_html(
            '<text x="0" y="{}" font-size="10">{}</text><text x="0" y="{}" font-size="10">0</text>',
            legend_h + 10,
            f"{tallest:,}",
            legend_h + plot_h,
        )
    )
    for index, name in enumerate(present):
        x = index * (width / max(len(present), 1))
        parts.append(
            format_html(
                '<rect x="{}" y="2" width="10" height="10" fill="{}"></rect>'
                '<text x="{}" y="11" font-size="10">{}</text>',
                _n(x),
                colour[name],
                _n(x + 13),
                name.replace("_", " "),
            )
        )
    body = format_html_join("", "{}", ((part,) for part in parts))
    return _svg(width, height, "Weekly cohorts by outcome", body)


def rate_chart(rows: list[dict], key: str, title: str) -> SafeString:
    """A horizontal bar per breakdown group for one rate (0–1)."""
    width, label_w, row_h = 720, 160, 26
    bar_w = width - label_w - 70
    items = [
        (
            index * row_h + 17,
            str(row["group"]) if row["group"] not in (None, "") else "(none)",
            label_w,
            index * row_h + 4,
            _n(bar_w * (row[key] or 0)),
            _n(label_w + bar_w * (row[key] or 0) + 6),
            index * row_h + 17,
            _percent(row[key]),
        )
        for index, row in enumerate(rows)
    ]
    body = format_html_join(
        "",
        '<text x="0" y="{}" font-size="12">{}</text>'
        '<rect x="{}" y="{}" width="{}" height="18" fill="#009E73"></rect>'
        '<text x="{}" y="{}" font-size="12">{}</text>',
        items,
    )
    return _svg(width, max(len(rows), 1) * row_h + 4, title, body)
