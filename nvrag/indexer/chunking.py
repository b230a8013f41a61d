"""Token-aware chunking: windows of the embedder's own tokens, with overlap, cut at token boundaries.

Each chunk keeps its character span in the document text, so ``chunk.text == doc.text[start:end]``.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import replace

from nvrag.errors import ConfigError
from nvrag.indexer.reading import MAX_CHUNK_CHARS, MAX_TITLE_CHARS
from nvrag.schema import Chunk, ChunkerSettings, Document

TokenSpans = Callable[[str], list[tuple[int, int]]]


def default_settings(max_text_tokens: int) -> ChunkerSettings:
    """The default chunker, shrunk to fit a model whose texts are shorter than the default chunk."""
    base = ChunkerSettings()
    size = min(base.chunk_tokens, max_text_tokens)
    return ChunkerSettings(chunk_tokens=size, overlap_tokens=min(base.overlap_tokens, size // 4))


DOCUMENT_MODE = "document"


def whole_documents(title_separator: str = " ") -> ChunkerSettings:
    """One chunk per document, truncated by the model: the MTEB protocol (title + " " + text)."""
    return ChunkerSettings(chunk_tokens=0, overlap_tokens=0, mode=DOCUMENT_MODE, title_separator=title_separator)


def check_settings(settings: ChunkerSettings, max_text_tokens: int) -> None:
    if settings.mode == DOCUMENT_MODE:
        return
    if settings.mode != "tokens":
        raise ConfigError(f"unknown chunking mode {settings.mode!r}; use tokens or document")
    if settings.chunk_tokens < 1:
        raise ConfigError(f"chunk size must be at least 1 token (got {settings.chunk_tokens})")
    if not 0 <= settings.overlap_tokens < settings.chunk_tokens:
        raise ConfigError(
            f"overlap must be at least 0 and smaller than the chunk size "
            f"(got overlap {settings.overlap_tokens}, size {settings.chunk_tokens})"
        )
    if settings.chunk_tokens > max_text_tokens:
        raise ConfigError(
            f"chunk size {settings.chunk_tokens} tokens exceeds the model's limit of {max_text_tokens} "
            f"tokens per text; use --chunk-tokens {max_text_tokens} or less"
        )


def chunk_id(model_key: str, settings: ChunkerSettings, doc_id: str, chunk_no: int, text: str) -> str:
    """A chunk's identity: its model, chunker settings, document, position and text."""
    payload = "\x1f".join([model_key, settings.fingerprint(), doc_id, str(chunk_no), text])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _continues_word(text: str, spans: list[tuple[int, int]]) -> list[bool]:
    """For each token, whether it continues the previous token's word (a subword piece such as '##ing').

    Windows never start or end inside a word: re-tokenised on its own, a cut word can take more tokens.
    """
    flags = [False] * len(spans)
    for i in range(1, len(spans)):
        at = spans[i][0]
        flags[i] = at == spans[i - 1][1] and 0 < at < len(text) and text[at - 1].isalnum() and text[at].isalnum()
    return flags


def _chunk(doc: Document, settings: ChunkerSettings, model_key: str, no: int, start: int, end: int) -> Chunk:
    """Chunk number ``no`` of ``doc``: ``doc.text[start:end]``, with its id, and its page for PDFs."""
    text = doc.text[start:end]
    metadata = doc.metadata
    if doc.page_starts:
        metadata = {**metadata, "page": bisect.bisect_right(doc.page_starts, start)}
    return Chunk(
        chunk_id=chunk_id(model_key, settings, doc.doc_id, no, text),
        doc_id=doc.doc_id,
        source=doc.source,
        chunk_no=no,
        text=text,
        start=start,
        end=end,
        title=doc.title,
        metadata=metadata,
    )


_SENTENCE_END = (".", "!", "?", ":", ";")


def _boundary_strength(text: str, spans: list[tuple[int, int]], cont: list[bool], j: int) -> int:
    """How good a place the gap before token j is to end a chunk: 3 a paragraph break or a heading,
    2 a line break, 1 a sentence end, 0 between words, -1 inside a word."""
    if cont[j]:
        return -1
    gap = text[spans[j - 1][1] : spans[j][0]]
    if "\n\n" in gap or ("\n" in gap and text.startswith("#", spans[j][0])):
        return 3
    if "\n" in gap:
        return 2
    if gap.strip()[-1:] in _SENTENCE_END or (not gap.strip() and text[spans[j - 1][1] - 1] in _SENTENCE_END):
        return 1
    return 0


def _best_cut(text: str, spans: list[tuple[int, int]], cont: list[bool], first: int, limit: int) -> int:
    """Where a window starting at token ``first`` ends (exclusive), at most ``limit``: the strongest boundary
    in the window's second half (structure first: paragraphs and headings, then lines, sentences, words),
    the latest one among equals; inside a word only when one word fills the window."""
    if limit >= len(spans):
        return len(spans)
    best, best_strength = limit, _boundary_strength(text, spans, cont, limit)
    for j in range(limit - 1, first + max(1, (limit - first) // 2) - 1, -1):
        strength = _boundary_strength(text, spans, cont, j)
        if strength > best_strength:
            best, best_strength = j, strength
    if best_strength < 0:  # no boundary in the second half: any word boundary at all
        for j in range(limit - 1, first, -1):
            if not cont[j]:
                return j
    return best


def chunk_document(
    doc: Document,
    spans_of: TokenSpans,
    settings: ChunkerSettings,
    model_key: str,
) -> list[Chunk]:
    """Cut ``doc`` into windows of at most ``settings.chunk_tokens`` tokens overlapping by about
    ``overlap_tokens``. Structure first: a window ends at a paragraph break or before a heading when one falls
    in its second half, else at a line break, a sentence end, or between words; never inside a word unless a
    single word is longer than the window."""
    if doc.title is not None and len(doc.title) > MAX_TITLE_CHARS:
        # the title is embedded with every chunk: unbounded, one hostile heading cost each batch gigabytes
        doc = replace(doc, title=doc.title[:MAX_TITLE_CHARS].rstrip() + "…")
    if settings.mode == DOCUMENT_MODE:
        if not doc.text.strip():
            return []
        return [_chunk(doc, settings, model_key, 0, 0, len(doc.text))]
    spans = spans_of(doc.text)
    if not spans:
        return []
    chunks = _token_windows(doc, spans, settings, model_key)
    longest = max(chunks, key=lambda c: len(c.text))
    if len(longest.text) > MAX_CHUNK_CHARS:
        raise ValueError(
            f"chunk {longest.chunk_no} is {len(longest.text):,} characters long, over the {MAX_CHUNK_CHARS:,} limit "
            "for one chunk (text with few token boundaries, such as one very long word); skipped"
        )
    return chunks


def _token_windows(
    doc: Document, spans: list[tuple[int, int]], settings: ChunkerSettings, model_key: str
) -> list[Chunk]:
    cont = _continues_word(doc.text, spans)
    size, overlap, n = settings.chunk_tokens, settings.overlap_tokens, len(spans)
    chunks: list[Chunk] = []
    first = 0
    while True:
        last = _best_cut(doc.text, spans, cont, first, min(first + size, n))  # exclusive
        hard_split = last < n and cont[last]
        if hard_split:
            last = min(first + size, n)  # one word longer than the window: cut it
        chunks.append(_chunk(doc, settings, model_key, len(chunks), spans[first][0], spans[last - 1][1]))
        if last == n:
            return chunks
        following = last - overlap
        if hard_split:
            first = max(following, first + 1)
            continue
        while following > first + 1 and cont[following]:
            following -= 1  # start the overlap at a word's first piece
        first = following if following > first and not cont[following] else last
