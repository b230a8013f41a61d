"""HTML for search results: a card per document with its rank, a score bar (ranks for hybrid), the source,
highlighted query terms, the full chunk and the document's other matching chunks.

Every piece of indexed text is HTML-escaped before it is highlighted: documents cannot inject markup.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from urllib.parse import quote

from nvrag.schema import Hit

SNIPPET_CHARS = 320
_WORD = re.compile(r"\w{2,}", re.UNICODE)
# too common to be worth a highlight
_STOP = frozenset(
    [
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "and",
        "or",
        "for",
        "is",
        "are",
        "was",
        "be",
        "by",
        "as",
        "at",
        "it",
        "its",
        "from",
        "that",
        "this",
        "with",
        "how",
        "what",
        "which",
        "who",
        "why",
        "when",
        "where",
        "do",
        "does",
        "can",
        "i",
        "you",
        "we",
        "my",
        "your",
        "me",
    ]
)

CSS = """
.nvrag-card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 14px; margin: 8px 0; }
.nvrag-head { display: flex; gap: 12px; align-items: center; font-size: 0.9em; }
.nvrag-rank { font-weight: 700; }
.nvrag-bar { width: 120px; height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; }
.nvrag-bar > div { height: 100%; background: #2f81f7; }
.nvrag-title { font-weight: 600; margin: 4px 0; }
.nvrag-text mark { background: #fff3b0; padding: 0 1px; }
.nvrag-message { padding: 10px 14px; border-radius: 8px; background: #f6f8fa; border: 1px solid #d0d7de; }
.nvrag-error { background: #fff1f0; border-color: #ffa39e; }
.nvrag-more-item { border-top: 1px dashed #d0d7de; margin-top: 6px; padding-top: 6px; }
"""


def query_terms(query: str) -> list[str]:
    """Words of the query worth highlighting (two characters or more), longest first, without repeats."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in _STOP:
            seen.setdefault(word, None)
    return sorted(seen, key=len, reverse=True)


def highlight(text: str, terms: Sequence[str]) -> str:
    """``text`` HTML-escaped, with whole-word, case-insensitive matches of ``terms`` wrapped in <mark>.

    Matches are found in the raw text and each piece is escaped on its own, so a term can never match inside
    an entity that escaping made (``&amp;``, ``&quot;``...) and split it."""
    if not terms:
        return html.escape(text)
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
    pieces, at = [], 0
    for match in pattern.finditer(text):
        pieces.append(html.escape(text[at : match.start()]))
        pieces.append(f"<mark>{html.escape(match.group())}</mark>")
        at = match.end()
    pieces.append(html.escape(text[at:]))
    return "".join(pieces)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")
_LINE_START = re.compile(r"^(\d*)((?<=\d)[.)]|(?<!\d)[-=])")  # a numbered item, a list or a rule at a line's start


def md(text: object) -> str:
    """Text from data or the user, safe inside Markdown: HTML escaped, Markdown's punctuation backslashed,
    line breaks flattened (a value stays in its table cell or list item)."""
    flat = " ".join(str(text).split())
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))
    return _LINE_START.sub(lambda m: (m[1] or "") + "\\" + m[2], escaped)


def message(text: str, *, error: bool = False) -> str:
    kind = "nvrag-message nvrag-error" if error else "nvrag-message"
    return f'<div class="{kind}" data-testid="{"error" if error else "message"}">{html.escape(text, quote=False)}</div>'


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rstrip() + "…"


def by_document(hits: Sequence[Hit]) -> list[list[Hit]]:
    """The hits grouped by document, in the order of each document's best hit (its chunks best first)."""
    groups: dict[str, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(hit.doc_id, []).append(hit)
    return list(groups.values())


def _source(hit: Hit, source_url: str | None, index: str) -> str:
    source = html.escape(hit.source) + (f" (page {hit.page})" if hit.page is not None else "")
    if source_url is None:
        return source
    href = f"{source_url}/{quote(index, safe='')}/{quote(hit.chunk_id, safe='')}"
    return f'<a href="{href}" target="_blank" rel="noopener">{source}</a>'


def _score(hit: Hit, top: float, mode: str) -> str:
    """Dense and BM25 scores with a bar relative to the top hit; hybrid (RRF) scores are not on a scale a bar
    means anything on, so its ranks are shown instead; a reranked hit shows its rerank score and the rank the
    first stage gave it."""
    if hit.rerank_score is not None:
        return (
            f'<span class="nvrag-score" title="the reranker\'s score; the first stage ranked it #{hit.retrieval_rank}">'
            f"rerank {hit.rerank_score:.3f} (was #{hit.retrieval_rank})</span>"
        )
    if mode == "hybrid":
        dense = f"#{hit.dense_rank}" if hit.dense_rank is not None else "-"
        bm25 = f"#{hit.bm25_rank}" if hit.bm25_rank is not None else "-"
        return (
            f'<span class="nvrag-score" title="reciprocal rank fusion of both rankings">'
            f"fused #{hit.rank} (dense {dense}, BM25 {bm25})</span>"
        )
    width = 0.0 if top <= 0 else max(0.0, min(1.0, hit.score / top)) * 100
    return (
        f'<span class="nvrag-score">{hit.score:.3f}</span>'
        f'<span class="nvrag-bar" title="score relative to the top hit"><div style="width:{width:.0f}%"></div></span>'
    )


def result_cards(
    hits: Sequence[Hit], query: str, source_url: str | None, index: str, mode: str = "dense", limit: int | None = None
) -> str:
    """One card per document (at most ``limit``), in the order of its best chunk: that chunk's snippet, the full
    chunk on demand, and the document's other matching chunks under "more from this document". ``source_url``
    is the route that serves a hit's local source (None: no links)."""
    terms = query_terms(query)
    top = max((h.score for h in hits), default=0.0)
    cards = []
    for position, group in enumerate(by_document(hits)[:limit], start=1):
        best = group[0]
        title = f'<div class="nvrag-title">{html.escape(best.title)}</div>' if best.title else ""
        more = ""
        if len(group) > 1:
            passages = "".join(
                f'<div class="nvrag-more-item">{_score(h, top, mode)} '
                f'<div class="nvrag-text">{highlight(_snippet(h.text), terms)}</div>'
                f"<small>{_source(h, source_url, index)}</small></div>"
                for h in group[1:]
            )
            more = (
                f'<details data-testid="more"><summary>{len(group) - 1} more from this document</summary>'
                f"{passages}</details>"
            )
        cards.append(
            f'<div class="nvrag-card" data-testid="hit" data-doc-id="{html.escape(best.doc_id)}">'
            f'<div class="nvrag-head"><span class="nvrag-rank">#{position}</span>{_score(best, top, mode)}'
            f"<span>{html.escape(best.doc_id)}</span></div>"
            f"{title}"
            f'<div class="nvrag-text">{highlight(_snippet(best.text), terms)}</div>'
            f"<details><summary>Full chunk · {_source(best, source_url, index)}</summary>"
            f'<div class="nvrag-text">{highlight(best.text, terms)}</div></details>'
            f"{more}</div>"
        )
    return "\n".join(cards)
