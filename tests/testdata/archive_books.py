"""Rebuilds order books from the archive exactly as docs/archive.md tells users to, with
DuckDB: the latest WebSocket snapshot at or before the time (by ts), plus the deltas stamped
after its splice point (last_delta_ts_ms) up to the time. Prints one JSON object per query:
{"market", "at_ms", "yes": [[price, quantity], ...], "no": [...]}, as a JSON list.

usage: archive_books.py ROOT QUERIES
  ROOT: the archive's root (holding stream=orderbook_snapshots/ and stream=orderbook_deltas/)
  QUERIES: a JSON file [{"market": ..., "at_ms": ...}, ...]
"""
import json
import os
import sys

import duckdb

root, queries = sys.argv[1:3]
snaps = os.path.join(root, "stream=orderbook_snapshots", "**", "*.parquet")
deltas = os.path.join(root, "stream=orderbook_deltas", "**", "*.parquet")
con = duckdb.connect()


def side(market, at_ms, name, code):
    # docs/archive.md, "Rebuilding a book from a snapshot plus deltas", for one side.
    sql = f"""
    WITH snap AS (
      SELECT {name} AS levels, last_delta_ts_ms AS after_ms
      FROM read_parquet('{snaps}')
      WHERE market_ticker = $market AND source = 'ws' AND ts <= make_timestamp($at * 1000)
      ORDER BY ts DESC LIMIT 1
    ), levels AS (
      SELECT l.price, l.quantity FROM snap, unnest(snap.levels) AS t(l)
      UNION ALL
      SELECT price, delta FROM read_parquet('{deltas}'), snap
      WHERE market_ticker = $market AND side = {code}
        AND ts_ms > snap.after_ms AND ts <= make_timestamp($at * 1000)
    )
    SELECT price, sum(quantity)::BIGINT AS q FROM levels GROUP BY price
    HAVING sum(quantity) <> 0 ORDER BY price
    """
    rows = con.execute(sql, {"market": market, "at": at_ms}).fetchall()
    return [[int(p), int(q)] for p, q in rows]


out = []
for q in json.load(open(queries)):
    out.append(
        {
            "market": q["market"],
            "at_ms": q["at_ms"],
            "yes": side(q["market"], q["at_ms"], "yes", 1),
            "no": side(q["market"], q["at_ms"], "no", 2),
        }
    )
print(json.dumps(out))
