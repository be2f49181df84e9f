"""Reads the archive the way a user would, with independent implementations: every Parquet
file is fetched from S3 with boto3 and read by DuckDB and by pyarrow. Prints, per stream and
per reader, every row as a JSON list (times as Unix milliseconds, book levels as
[[price, quantity], ...], decimals as the integer of their smallest unit: micro-dollars and
centi-contracts), sorted, so the test compares them with production exactly; and each
reader's type of every column, so the test sees prices and quantities read as decimals.

usage: archive_read.py ENDPOINT BUCKET PREFIX WORKDIR
       archive_read.py --dir ROOT PREFIX   (an archive in a local directory: read in place)
"""
import decimal
import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

files = {}
if sys.argv[1] == "--dir":
    work, prefix = sys.argv[2:4]
    base = os.path.join(work, prefix)
    for d, _, names in os.walk(base):
        for n in names:
            if n.startswith("."):
                continue  # a writer's temporary file, not an object
            key = os.path.relpath(os.path.join(d, n), work).replace(os.sep, "/")
            if not key.startswith(prefix + "stream="):
                continue
            stream = key[len(prefix) + len("stream="):].split("/", 1)[0]
            files.setdefault(stream, []).append(os.path.join(d, n))
else:
    import boto3

    endpoint, bucket, prefix, work = sys.argv[1:5]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    token = None
    while True:
        # The data files, and the manifests (docs/archive.md's book macros read their
        # `uncovered` windows).
        kw = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        out = s3.list_objects_v2(**kw)
        for o in out.get("Contents", []):
            key = o["Key"]
            rest = key[len(prefix):]
            if not (rest.startswith("stream=") or rest.startswith("manifests/")):
                continue
            path = os.path.join(work, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            s3.download_file(bucket, key, path)
            if rest.startswith("stream="):
                stream = rest[len("stream="):].split("/", 1)[0]
                files.setdefault(stream, []).append(path)
        if not out.get("IsTruncated"):
            break
        token = out["NextContinuationToken"]


def norm(v):
    if isinstance(v, decimal.Decimal):
        # 0.560000 (scale 6) -> 560000: exact, the scale is the column's.
        return int(v.scaleb(-v.as_tuple().exponent))
    if isinstance(v, list):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return [norm(x) for x in v.values()]
    return v


result = {}
con = duckdb.connect()
for stream, paths in sorted(files.items()):
    glob = os.path.join(work, prefix, "stream=" + stream, "**", "*.parquet")
    cols = [f.name for f in pq.read_schema(paths[0])]
    ts_cols = [f.name for f in pq.read_schema(paths[0]) if pa.types.is_timestamp(f.type)]
    sel = ", ".join(
        f"epoch_ms({c})" if c in ts_cols else c for c in cols
    )
    rows = con.execute(
        f"SELECT {sel} FROM read_parquet('{glob}', hive_partitioning = false)"
    ).fetchall()
    d = sorted(json.dumps(norm(list(r))) for r in rows)
    t = pa.concat_tables([pq.read_table(p) for p in paths])
    for c in ts_cols:
        t = t.set_column(t.schema.get_field_index(c), c, t.column(c).cast(pa.int64()))
    arrow_rows = [json.dumps([norm(r[c]) for c in cols]) for r in t.to_pylist()]
    meta = pq.read_metadata(paths[0])
    duck_types = {
        name: str(kind)
        for name, kind, *_ in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = false)"
        ).fetchall()
    }
    arrow_types = {f.name: str(f.type) for f in t.schema}
    result[stream] = {
        "types": {"duckdb": duck_types, "pyarrow": arrow_types},
        "files": len(paths),
        "duckdb": d,
        "pyarrow": sorted(arrow_rows),
        "compression": meta.row_group(0).column(0).compression,
        "row_groups": sum(pq.read_metadata(p).num_row_groups for p in paths),
    }
if "trades" in files and "markets" in files:
    # docs/archive.md's as-of join: every trade with the market as it was at the trade's time.
    trades_glob = os.path.join(work, prefix, "stream=trades", "**", "*.parquet")
    markets_glob = os.path.join(work, prefix, "stream=markets", "**", "*.parquet")
    n, titled = con.execute(
        f"""SELECT count(*), count(title) FROM (
          SELECT json_extract_string(m.body, '$.title') AS title
          FROM read_parquet('{trades_glob}') t
          ASOF LEFT JOIN read_parquet('{markets_glob}') m
            ON m.ticker = t.market_ticker AND m.observed_ms <= epoch_ms(t.ts))"""
    ).fetchone()
    result["asof"] = {"trades": n, "titled": titled}
if "trades" in files:
    # Read as dollars and contracts: a YES and a NO price of a trade add up to $1.
    trades_glob = os.path.join(work, prefix, "stream=trades", "**", "*.parquet")
    n, dollar, priced, contracts = con.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE yes_price + no_price = 1),
                   sum(yes_price * count)::VARCHAR, sum(count)::VARCHAR
            FROM read_parquet('{trades_glob}')"""
    ).fetchone()
    result["dollars"] = {
        "trades": n, "yes_plus_no_is_one": dollar, "notional": priced, "contracts": contracts
    }
json.dump(result, sys.stdout)
