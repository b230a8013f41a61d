"""Encodings: byte-order marks decide exactly; UTF-8 is UTF-8; else short Western European text is cp1252."""

from __future__ import annotations

import pytest

from nvrag.indexer.reading import RejectedInputError, decode_text

TEXT = "Grüße, café, naïve façade: ½ € «ok»"


@pytest.mark.parametrize(
    ("bom", "codec", "name"),
    [
        (b"\xef\xbb\xbf", "utf-8", "utf-8"),
        (b"\xff\xfe", "utf-16-le", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be", "utf-16-be"),
        (b"\xff\xfe\x00\x00", "utf-32-le", "utf-32-le"),  # begins with UTF-16 LE's BOM
        (b"\x00\x00\xfe\xff", "utf-32-be", "utf-32-be"),
    ],
)
def test_byte_order_marks_are_honoured_exactly(bom: bytes, codec: str, name: str) -> None:
    assert decode_text(bom + TEXT.encode(codec)) == (TEXT, name)


def test_a_bom_that_lies_is_a_clear_failure() -> None:
    with pytest.raises(RejectedInputError, match="starts with a UTF-32-LE byte-order mark but is not valid UTF-32-LE"):
        decode_text(b"\xff\xfe\x00\x00" + "ab".encode("utf-16-le") + b"\x00")


def test_text_that_decodes_as_utf8_is_utf8() -> None:
    assert decode_text("Zażółć gęślą jaźń, 東京".encode()) == ("Zażółć gęślą jaźń, 東京", "utf-8")


@pytest.mark.parametrize(
    "text",
    [
        "Café au lait, s'il vous plaît.",
        "Über die Brücke gehen wir täglich.",
        "El niño comió piñata en la mañana.",
        "Déjà vu — naïve façade",
        "Smørrebrød og æbleskiver",
        "Ça coûte 5 € à l'hôtel",
        "Le garçon très gâté",
        "Straße",
        "résumé",
        "«Olá», disse ela. Não há açúcar.",
        "¿Dónde está?",
        "Hjärtligt välkommen på vår resa",
    ],
)
def test_short_western_european_text_is_cp1252(text: str) -> None:
    assert decode_text(text.encode("cp1252")) == (text, "cp1252")


@pytest.mark.parametrize(
    "text",
    ["Příliš žluťoučký kůň úpěl ďábelské ódy", "Zażółć gęślą jaźń", "Śląsk", "Łódź"],
)
def test_central_european_text_is_cp1250(text: str) -> None:
    assert decode_text(text.encode("cp1250")) == (text, "cp1250")


def test_binary_is_refused() -> None:
    with pytest.raises(RejectedInputError, match="looks binary"):
        decode_text(b"abc\x00\x01\x02")
