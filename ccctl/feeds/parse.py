"""Documents to rows, by the feed's format (``auto`` picks by name, content type or content)."""

from __future__ import annotations

from ccctl.feeds.ncsc import is_ncsc, parse_ncsc
from ccctl.feeds.spec import Document, FeedSpec, RawRow
from ccctl.feeds.tables import load_json, parse_csv, parse_records, parse_xlsx


def sniff(doc: Document) -> str:
    """The format of a document: csv, xlsx or json (ncsc is told apart after parsing JSON)."""
    name = doc.name.lower().split("?")[0]
    for suffix, fmt in ((".csv", "csv"), (".xlsx", "xlsx"), (".json", "json")):
        if name.endswith(suffix):
            return fmt
    if "json" in doc.content_type:
        return "json"
    if doc.body.startswith(b"PK\x03\x04"):
        return "xlsx"
    if doc.body.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "csv"


def parse_document(doc: Document, spec: FeedSpec) -> list[RawRow]:
    """Rows of one document; ValueError saying what is wrong with it."""
    head = doc.body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise ValueError("an HTML page, not data (an error or login page?)")
    fmt = spec.format if spec.format != "auto" else sniff(doc)
    if fmt == "csv":
        try:
            return parse_csv(doc, spec.level, spec.unit_column)
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte 0x{doc.body[exc.start]:02x} at offset {exc.start}); "
                             "save it as UTF-8") from None
    if fmt == "xlsx":
        return parse_xlsx(doc, spec.level, spec.unit_column)
    data = load_json(doc)
    if fmt == "ncsc" or (fmt == "json" and is_ncsc(data)):
        if spec.level != "province":
            raise ValueError("the national COVID API's shape is per province: use --level province")
        return parse_ncsc(data, doc)
    return parse_records(data, doc, spec.level, spec.unit_column)
