#!/usr/bin/env python3
"""Validates kalshi-sim responses and frames against Kalshi's published schemas, with an
independent validator (Python `jsonschema`).

Reads a JSON list of samples from a file: {"schema": "openapi:GetMarketsResponse" or
"asyncapi:orderbookDeltaPayload", "mode": "newest" or "legacy", "body": ...}.
Writes {"checked": N, "failures": [...]} on stdout.

The spec copies in ../shared/kalshi-spec/ are older than kalshi-api.md in places. Where they
differ, kalshi-api.md is newer and wins; every such adjustment is listed in NEWEST below with the
section it comes from, and applies only in "newest" mode. In "legacy" mode (kalshi-sim
--legacy-fields) WebSocket frames are checked against the March 2026 AsyncAPI as published, with
only the relaxations in LEGACY_RELAXED.

Usage: validate.py OPENAPI_YAML ASYNCAPI_YAML SAMPLES_JSON
"""
import copy
import json
import re
import sys

import jsonschema
import yaml

# kalshi-api.md is newer than the spec copies. Per schema: fields no longer required (removed
# or made optional since the copy), fields required by the newest shape, and other changes.
NEWEST = {
    # §5.3 Market (SDK 3.34): "Removed since OAPI-3.10: fractional_trading_enabled,
    # liquidity_dollars, tick_size, response_price_units"; title/subtitle/expiration_time are
    # optional in 3.34.
    "openapi:Market": {
        "drop_required": ["fractional_trading_enabled", "liquidity_dollars", "tick_size",
                          "response_price_units", "title", "subtitle", "expiration_time"],
        "add_required": ["settlement_timer_seconds", "settlement_bounds_type", "price_level_structure",
                         "price_ranges", "notional_value_dollars", "yes_bid_size_fp", "yes_ask_size_fp"],
    },
    # §5.3 Trade: 3.10 requires `price` (absent from its own properties) and the deprecated
    # `taker_side`; 3.34 requires taker_outcome_side, taker_book_side, created_time, is_block_trade.
    "openapi:Trade": {
        "drop_required": ["price", "taker_side"],
        "add_required": ["taker_outcome_side", "taker_book_side", "created_time", "is_block_trade"],
    },
    # §5.3 EventData: category is deprecated and optional; available_on_brokers and
    # product_metadata are not in 3.34's required list.
    "openapi:EventData": {
        "drop_required": ["category", "available_on_brokers", "product_metadata"],
    },
    # §5.3 Series: tags is often null (A-35), settlement_sources and additional_prohibitions are
    # optional, categories is required, fee_type is an open vocabulary (A-11).
    "openapi:Series": {
        "drop_required": ["settlement_sources", "additional_prohibitions"],
        "add_required": ["categories"],
        "nullable": ["tags"],
        "open_enum": ["fee_type"],
    },
    # §5.2: a side of the REST book can be null.
    "openapi:OrderbookCountFp": {"nullable": ["yes_dollars", "no_dollars"]},
    # §4.6 orderbook_delta, newest: the integer price/delta are gone; ts is deprecated.
    "asyncapi:orderbookDeltaPayload": {
        "msg_drop_required": ["price", "delta"],
        "msg_add_required": ["price_dollars", "delta_fp", "side", "market_id"],
    },
    # §4.6 ticker, newest: "All msg fields are required" for the newest field list.
    "asyncapi:tickerPayload": {
        "msg_drop_required": ["price", "yes_bid", "yes_ask", "volume", "open_interest"],
        "msg_add_required": ["price_dollars", "yes_bid_dollars", "yes_ask_dollars", "volume_fp",
                             "open_interest_fp", "dollar_volume", "dollar_open_interest",
                             "yes_bid_size_fp", "yes_ask_size_fp", "last_trade_size_fp", "ts_ms"],
    },
    # §4.6 trade, newest: integer price/count gone; ts_ms added.
    "asyncapi:tradePayload": {
        "msg_drop_required": ["yes_price", "no_price", "count"],
        "msg_add_required": ["yes_price_dollars", "no_price_dollars", "count_fp", "ts_ms"],
    },
    # §4.6 lifecycle: event types beyond the March 2026 enum; "keep the enum open".
    "asyncapi:marketLifecycleV2Payload": {"msg_open_enum": ["event_type"]},
}

# Both modes: the AsyncAPI's marketTicker pattern `^[A-Z0-9-]+$` rejects the spec's own
# examples ("FED-23DEC-T3.00", "HIGHNY-22DEC23-B53.5"); real tickers contain dots.
TICKER_PATTERN = "^[A-Z0-9.-]+$"

# Legacy mode keeps the March 2026 AsyncAPI, except: a market with no trade yet has no last
# price and an empty side has no best price, which Kalshi reports as 0 for a bid and 100 for an
# ask (the REST listing's "0.0000" and "1.0000"), outside the schema's 1..99; and the lifecycle
# enum is open as in newest mode.
LEGACY_RELAXED = {
    "asyncapi:tickerPayload": {"msg_no_minimum": ["price", "yes_bid", "yes_ask"],
                               "msg_no_maximum": ["yes_ask"]},
    "asyncapi:marketLifecycleV2Payload": {"msg_open_enum": ["event_type"]},
}

class SpecLoader(yaml.SafeLoader):
    """YAML 1.2 booleans only: the specs have properties named `yes` and `no`, which YAML 1.1
    would turn into booleans."""


SpecLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def to_json_schema(node, prefix):
    """OpenAPI 3.0 / AsyncAPI schema -> JSON Schema: refs into `definitions`, `nullable`."""
    if isinstance(node, list):
        return [to_json_schema(n, prefix) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k.startswith("x-") or k in ("example", "examples", "deprecated", "nullable"):
            continue
        if k == "$ref":
            out[k] = "#/definitions/" + prefix + ":" + v.rsplit("/", 1)[1]
        else:
            out[k] = to_json_schema(v, prefix)
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
        elif "$ref" in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def make_nullable(schema):
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    schema = dict(schema)
    t = schema.get("type")
    if isinstance(t, str):
        schema["type"] = [t, "null"]
    return schema


def adjust(defs, name, rules):
    s = defs[name]
    for f in rules.get("drop_required", []):
        if f in s.get("required", []):
            s["required"].remove(f)
    for f in rules.get("add_required", []):
        s.setdefault("required", [])
        if f not in s["required"]:
            s["required"].append(f)
    for f in rules.get("nullable", []):
        s["properties"][f] = make_nullable(s["properties"][f])
    for f in rules.get("open_enum", []):
        s["properties"][f].pop("enum", None)
    msg = s.get("properties", {}).get("msg")
    if msg is None:
        return
    for f in rules.get("msg_drop_required", []):
        if f in msg.get("required", []):
            msg["required"].remove(f)
    for f in rules.get("msg_add_required", []):
        msg.setdefault("required", [])
        if f not in msg["required"]:
            msg["required"].append(f)
    for f in rules.get("msg_open_enum", []):
        msg["properties"][f].pop("enum", None)
    for f in rules.get("msg_no_minimum", []):
        msg["properties"][f].pop("minimum", None)
    for f in rules.get("msg_no_maximum", []):
        msg["properties"][f].pop("maximum", None)


def load(openapi_path, asyncapi_path):
    with open(openapi_path) as f:
        oapi = yaml.load(f, Loader=SpecLoader)
    with open(asyncapi_path) as f:
        aapi = yaml.load(f, Loader=SpecLoader)
    defs = {}
    for k, v in oapi["components"]["schemas"].items():
        defs["openapi:" + k] = to_json_schema(v, "openapi")
    for k, v in aapi["components"]["schemas"].items():
        defs["asyncapi:" + k] = to_json_schema(v, "asyncapi")
    return defs


def main():
    defs = load(sys.argv[1], sys.argv[2])
    variants = {}
    for mode, rules in (("newest", NEWEST), ("legacy", LEGACY_RELAXED)):
        d = copy.deepcopy(defs)
        for name, r in rules.items():
            adjust(d, name, r)
        d["asyncapi:marketTicker"]["pattern"] = TICKER_PATTERN
        variants[mode] = d
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(lambda v: not isinstance(v, str) or bool(RFC3339.match(v)))
    with open(sys.argv[3]) as f:
        samples = json.load(f)
    failures = []
    for i, s in enumerate(samples):
        d = variants[s.get("mode", "newest")]
        if s["schema"] not in d:
            failures.append({"sample": i, "schema": s["schema"], "error": "no such schema"})
            continue
        schema = {"$ref": "#/definitions/" + s["schema"], "definitions": d}
        validator = jsonschema.Draft7Validator(schema, format_checker=checker)
        for err in validator.iter_errors(s["body"]):
            failures.append({"sample": i, "schema": s["schema"], "mode": s.get("mode", "newest"),
                             "path": "/".join(str(p) for p in err.absolute_path), "error": err.message[:300]})
    json.dump({"checked": len(samples), "failures": failures[:50], "failure_count": len(failures)}, sys.stdout)


if __name__ == "__main__":
    main()
