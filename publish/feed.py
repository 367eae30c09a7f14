"""The Atom feed (RFC 4287) of fund movements, hand-written XML."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from . import present

ATOM_TYPE = "application/atom+xml; charset=utf-8"


def atom(rows: list[dict], *, title: str, feed_url: str, site_url: str, entry_url, origin: str,
         updated: str | None) -> bytes:
    """The feed of liquidation ``rows`` (newest first). ``entry_url(seq)``
    gives an entry page's absolute URL, used as the Atom entry's id too."""
    upd = (rows[0]["time"] if rows else None) or updated or "1970-01-01T00:00:00Z"
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n',
        '<feed xmlns="http://www.w3.org/2005/Atom">\n',
        f"  <title>{escape(title)}</title>\n",
        f"  <subtitle>{escape('Every movement of the insurance funds of ' + origin + ', from the signed log.')}</subtitle>\n",
        f"  <id>{escape(feed_url)}</id>\n",
        f"  <link rel=\"self\" type=\"application/atom+xml\" href={quoteattr(feed_url)}/>\n",
        f"  <link rel=\"alternate\" type=\"text/html\" href={quoteattr(site_url)}/>\n",
        f"  <updated>{escape(upd)}</updated>\n",
        f"  <author><name>{escape(origin)}</name></author>\n",
        "  <generator>fundledger</generator>\n",
    ]
    for r in rows:
        m = present.movement(r)
        cur = r.get("currency") or ""
        if present.is_negative(r.get("delta")):
            what = f"paid {present.amount(r['paid'])} {cur}" + (
                "" if present.is_zero(r.get("adl")) else f", ADL {present.amount(r['adl'])} {cur}")
        else:
            what = f"+{present.amount(r['delta'])} {cur}"
        title = f"{r['contract']}: {what} (liquidation {r['liquidation_id']})"
        url = entry_url(r["seq"])
        summary = (f"{m['sentence']} Balance after: {present.amount(r['balance'])} {cur}. "
                   f"Log entry #{r['seq']}.")
        out += [
            "  <entry>\n",
            f"    <title>{escape(title)}</title>\n",
            f"    <id>{escape(url)}</id>\n",
            f"    <link rel=\"alternate\" type=\"text/html\" href={quoteattr(url)}/>\n",
            f"    <updated>{escape(r['time'])}</updated>\n",
            f"    <category term={quoteattr(r['contract'])}/>\n",
            f"    <summary type=\"text\">{escape(summary)}</summary>\n",
            "  </entry>\n",
        ]
    out.append("</feed>\n")
    return "".join(out).encode("utf-8")
