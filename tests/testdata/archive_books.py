"""Rebuilds order books from the archive exactly as docs/archive.md tells users to, with
DuckDB: the `book_at` and `book_unknown` macros are taken from the document itself (its
```sql book-macros block), so the text users copy is the text tested. Prints one JSON object
per query: {"market", "at_ms", "unknown": reason or null, "yes": [[price, quantity], ...],
"no": [...]}, as a JSON list (levels ascending by price, prices in micro-dollars, quantities in
centi-contracts: the archive's decimals times 10^6 and 10^2; empty when unknown).

usage: archive_books.py ROOT QUERIES
  ROOT: the archive's root (holding stream=orderbook_snapshots/, stream=orderbook_deltas/ and
        manifests/)
  QUERIES: a JSON file [{"market": ..., "at_ms": ...}, ...]
"""
import json
import os
import re
import sys

import duckdb

root, queries = sys.argv[1:3]
doc = open(
    os.path.join(os.path.dirname(__file__), "..", "..", "docs", "archive.md"), encoding="utf-8"
).read()
blocks = re.findall(r"```sql book-macros\n(.*?)```", doc, re.S)
if len(blocks) != 1:
    sys.exit(f"docs/archive.md has {len(blocks)} book-macros blocks, not 1")
con = duckdb.connect()
con.execute(blocks[0])
root_sql = "'" + root.rstrip("/").replace("'", "''") + "'"


def book(market, at_ms):
    t = "make_timestamp($at * 1000)"
    args = {"market": market, "at": at_ms}
    (unknown,) = con.execute(
        f"SELECT unknown FROM book_unknown({root_sql}, $market, {t})", args
    ).fetchone()
    if unknown is not None:
        return unknown, [], []
    rows = con.execute(
        f"""SELECT side, (price * 1000000)::BIGINT, (contracts * 100)::BIGINT
            FROM book_at({root_sql}, $market, {t})""",
        args,
    ).fetchall()
    side = lambda s: sorted([int(p), int(q)] for x, p, q in rows if x == s)
    return None, side(1), side(2)


out = []
for q in json.load(open(queries)):
    unknown, yes, no = book(q["market"], q["at_ms"])
    out.append(
        {"market": q["market"], "at_ms": q["at_ms"], "unknown": unknown, "yes": yes, "no": no}
    )
print(json.dumps(out))
