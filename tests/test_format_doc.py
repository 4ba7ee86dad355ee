"""docs/FORMAT.md must match the code: the generated header table and every limit."""

from __future__ import annotations

from pathlib import Path

from ndf_datasets.codec.exact import SCALES
from ndf_datasets.codec.format import LIMITS, header_table_markdown
from ndf_datasets.codec.record import record_table_markdown

DOC = Path(__file__).parents[1] / "docs" / "FORMAT.md"
BEGIN = "<!-- header-table:begin -->"
END = "<!-- header-table:end -->"


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_header_table_matches_code():
    text = _doc()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "exactly one pair of header-table markers"
    table = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert table.strip() == header_table_markdown().strip(), (
        "docs/FORMAT.md header table is stale; replace it with format.header_table_markdown()"
    )


def test_every_limit_is_documented():
    text = _doc()
    missing = [name for name in LIMITS if name not in text]
    assert not missing, f"limits missing from docs/FORMAT.md: {missing}"


def test_record_table_and_scales_match_code():
    text = _doc()
    begin, end = "<!-- record-table:begin -->", "<!-- record-table:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    assert text.split(begin, 1)[1].split(end, 1)[0].strip() == record_table_markdown().strip()
    assert ", ".join(repr(s) for s in SCALES) in text
