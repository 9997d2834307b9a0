"""Fuzz target for ``sites import``: random CSV and xlsx files, each accepted whole or refused whole.

Every case is a file written to disk and read by the real import path (``read_table`` then
``validate_rows`` against a real SQLite registry's units). Cases are valid registries (with
Vietnamese names, leading ``= + - @ '``, commas, quotes), the same mutated (fields added or
dropped, headers doubled, quotes broken, bytes flipped, control characters, huge fields, invalid
UTF-8) and plain garbage. A case ends in one of: accepted (and then exported and read back
identical), rejected with a CcctlError whose message and reasons are one line each, or a crash
(any other exception: a traceback). ``run`` is bounded in cases and seconds; ``benchmarks/fuzz.py``
calls it, and ``python benchmarks/fuzz_imports.py [--quick]`` prints its counts.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ccctl.errors import CcctlError, ImportRejected
from ccctl.output import write_csv, write_xlsx
from ccctl.registry import open_registry
from ccctl.registry.files import export_rows, read_table, validate_rows
from ccctl.registry.sites import FIELDS, UnitIndex
from ccctl.registry.units import load_units

UNITS = ("00001", "26740", "29869", "31825", "00004", "26743")
WORDS = ("Điểm", "cầu", "Bến", "Nghé", "Phúc", "Xá", "Đồng", "Tháp", "Ủy", "ban", "xã", "\"trích\"", "a,b",
         "=1+1", "+84", "-5", "@SUM(A1)", "'x", "''", "=HYPERLINK(\"http://x\")", "=cmd|' /C calc'!A0", "ñ", "😀")
HOSTILE = ("\x00", "\x07", "\x1b[2J", "\r", "\n", "\t", "\u202e", "\x85", "\ufeff", "\"", ",", "'", "=", "\\", "%")


def _name(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def _site(rng: random.Random, number: int) -> dict[str, str]:
    """One valid row as an export would write it (every field text)."""
    return {
        "id": f"f-{number}-{rng.randint(0, 9999)}",
        "name": _name(rng),
        "scheme": "2021",
        "unit_code": rng.choice(UNITS),
        "host": rng.choice(["", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                            "box-1.example.vn"]),
        "ssh_port": str(rng.choice([22, 2222, 65535])),
        "ssh_user": rng.choice(["ccctl", "ops"]),
        "host_key": "",
        "key_path": rng.choice(["", "/etc/ccctl/id_ed25519"]),
        "tier": rng.choice(["high", "low", "audio"]),
        "link_kbps": rng.choice(["", "512", "100000"]),
        "contact_name": rng.choice(["", _name(rng)]),
        "contact_phone": rng.choice(["", "+84 912 345 678", "0912345678"]),
        "tags": ",".join(sorted({rng.choice(["pilot", "đảo", "=x", "+y", "'z"]) for _ in range(rng.randint(0, 3))})),
        "enabled": rng.choice(["yes", "no"]),
        "simulated": rng.choice(["yes", "no"]),
    }


def _valid_table(rng: random.Random) -> tuple[list[str], list[list[str]]]:
    columns = list(FIELDS) if rng.random() < 0.6 else ["id", "name", "unit_code"] + rng.sample(FIELDS[4:], 3)
    rows = [_site(rng, n) for n in range(rng.randint(0, 12))]
    return columns, [[row.get(c, "") for c in columns] for row in rows]


def _mutate_table(rng: random.Random, columns: list[str], rows: list[list[str]]) -> None:
    """Change the table's shape or values in one of many ways, in place."""
    kind = rng.randrange(8)
    if kind == 0 and rows:
        rng.choice(rows).insert(0, f"x-{rng.randint(0, 99)}")  # one field too many
    elif kind == 1 and rows:
        rng.choice(rows).pop()  # one field too few
    elif kind == 2:
        columns.append(rng.choice(columns).upper())  # duplicate column
        for row in rows:
            row.append("v")
    elif kind == 3 and rows:
        row = rng.choice(rows)
        row[rng.randrange(len(row))] += rng.choice(HOSTILE) * rng.randint(1, 3)
    elif kind == 4 and rows:
        row = rng.choice(rows)
        row[rng.randrange(len(row))] = "y" * rng.choice([201, 300, 5000, 70_000])
    elif kind == 5 and len(rows) > 1:
        rows.append(list(rng.choice(rows)))  # duplicate id
    elif kind == 6:
        columns[rng.randrange(len(columns))] = rng.choice(["", "nope", " Name ", "ID"])
    elif rows:
        row = rng.choice(rows)
        row[rng.randrange(len(row))] = rng.choice(["", "0", "99999", "-1", "yes", "=1", "'"])


def _csv_bytes(columns: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    write_csv(out, columns, rows)
    return out.getvalue().encode("utf-8")


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        where = rng.randrange(len(buf))
        op = rng.randrange(4)
        if op == 0:
            buf[where] = rng.randrange(256)
        elif op == 1:
            del buf[where:where + rng.randint(1, 8)]
        elif op == 2:
            buf[where:where] = rng.choice([b'"', b",", b"\n", b"\r", b"\x00", b"\xff\xfe", b"\xc3", b'""', b"\xef\xbb\xbf"])
        else:
            buf[where:where] = buf[rng.randrange(len(buf)):][:rng.randint(1, 40)]
    return bytes(buf)


def _case(rng: random.Random) -> tuple[str, bytes]:
    """(suffix, file content) of one random case."""
    roll = rng.random()
    columns, rows = _valid_table(rng)
    if roll < 0.04:  # xlsx: valid, reshaped, or corrupted bytes
        if rng.random() < 0.5:
            _mutate_table(rng, columns, rows)
        out = io.BytesIO()
        try:
            write_xlsx(out, columns, rows)  # type: ignore[arg-type]
        except ValueError:  # a hostile character xlsx cannot hold: a corrupted workbook instead
            return ".xlsx", _mutate_bytes(rng, b"PK\x03\x04" + bytes(rng.randrange(256) for _ in range(200)))
        data = out.getvalue()
        return ".xlsx", _mutate_bytes(rng, data) if rng.random() < 0.3 else data
    if roll < 0.30:
        return ".csv", _csv_bytes(columns, rows)
    if roll < 0.75:
        _mutate_table(rng, columns, rows)
        return ".csv", _csv_bytes(columns, rows)
    if roll < 0.95:
        return ".csv", _mutate_bytes(rng, _csv_bytes(columns, rows))
    return ".csv", bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))


def _one_line(exc: CcctlError) -> bool:
    reasons = [r for _, r in exc.problems] if isinstance(exc, ImportRejected) else []
    return all("\n" not in text and "\r" not in text and len(text) < 400 for text in [str(exc), *reasons])


def _usage() -> tuple[int, int]:
    """Current resident memory (KiB) and open file descriptors of this process."""
    try:
        status = Path("/proc/self/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    except (OSError, StopIteration):
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak, where /proc is missing
    return rss_kb, len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def run(cases: int, seed: int, max_seconds: float = 600.0) -> dict[str, Any]:
    """Fuzz ``cases`` import files (or until ``max_seconds``); counts of each outcome.

    Keys: cases, csv, xlsx, accepted, rejected, crashes, multiline (rejections whose message
    is not one line), roundtrip_mismatch (accepted files that export -> import changed),
    seconds, setup_seconds, rss_kb_before/after (resident memory), fds_before/after, samples (a few
    crash or mismatch descriptions with the case number, to replay with the same seed).
    """
    started = time.perf_counter()
    counts: dict[str, Any] = {k: 0 for k in ("cases", "csv", "xlsx", "accepted", "rejected", "crashes",
                                             "multiline", "roundtrip_mismatch")}
    samples: list[str] = []
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="ccctl-fuzz-") as tmp:
        root = Path(tmp)
        with open_registry(f"sqlite:///{root / 'registry.db'}") as db:
            load_units(db, "2021")
            index = UnitIndex(db)
            warm = random.Random(seed ^ 0x5EED)
            for _ in range(300):  # load openpyxl, fill caches: "before" is the steady state
                _try_case(db, index, root, *_case(warm))
            counts["setup_seconds"] = round(time.perf_counter() - started, 2)
            counts["rss_kb_before"], counts["fds_before"] = _usage()
            loop_start = time.perf_counter()
            for number in range(cases):
                if time.perf_counter() - loop_start > max_seconds:
                    break
                suffix, data = _case(rng)
                path = root / f"case{suffix}"
                path.write_bytes(data)
                counts["cases"] += 1
                counts[suffix[1:]] += 1
                try:
                    rows, lines = read_table(path)
                    sites = validate_rows(db, rows, lines, "2021", index=index, existing=set())
                except CcctlError as exc:
                    counts["rejected"] += 1
                    if not _one_line(exc):
                        counts["multiline"] += 1
                        if len(samples) < 10:
                            samples.append(f"case {number}: multi-line error {str(exc)[:200]!r}")
                    continue
                except Exception:
                    counts["crashes"] += 1
                    if len(samples) < 10:
                        samples.append(f"case {number}: " + traceback.format_exc(limit=3)[-600:])
                    continue
                counts["accepted"] += 1
                if not _round_trip(db, index, root, suffix, sites):
                    counts["roundtrip_mismatch"] += 1
                    if len(samples) < 10:
                        samples.append(f"case {number}: export -> import changed the sites")
            counts["rss_kb_after"], counts["fds_after"] = _usage()
    counts["seconds"] = round(time.perf_counter() - started, 2)
    counts["samples"] = samples
    return counts


def _try_case(db: Any, index: UnitIndex, root: Path, suffix: str, data: bytes) -> None:
    """One case, outcome ignored (warm-up)."""
    path = root / f"warm{suffix}"
    path.write_bytes(data)
    try:
        rows, lines = read_table(path)
        validate_rows(db, rows, lines, "2021", index=index, existing=set())
    except Exception:  # noqa: S110 - only warming up; the counted loop classifies outcomes
        pass


def _round_trip(db: Any, index: UnitIndex, root: Path, suffix: str, sites: list[dict[str, Any]]) -> bool:
    """Accepted sites, exported in the same format and read back, are the same sites."""
    path = root / f"again{suffix}"
    rows = export_rows(sites)
    if suffix == ".xlsx":
        write_xlsx(path, FIELDS, rows)
    else:
        path.write_bytes(_csv_bytes(list(FIELDS), rows))
    back, lines = read_table(path)
    return validate_rows(db, back, lines, "2021", index=index, existing=set()) == sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 cases (for the test suite)")
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long")
    args = parser.parse_args()
    result = run(2000 if args.quick else args.cases, args.seed, args.seconds)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    sys.exit(1 if result["crashes"] or result["multiline"] or result["roundtrip_mismatch"] else 0)


if __name__ == "__main__":
    main()
