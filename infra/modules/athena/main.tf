# Athena over the archive: a Glue database with one table per archived stream, partition
# projection on the Hive keys (date=yyyy-MM-dd/hour=HH: no crawler, no MSCK REPAIR, new hours are
# queryable at once), a workgroup with its own results bucket and a scan cutoff per query, and
# an analyst policy (read the archive and the tables, run queries in the workgroup).
#
# The tables describe archive schema version 4 (prices DECIMAL(18,6) dollars, quantities
# DECIMAL(18,2) contracts; docs/archive.md). Periods archived in versions 1-3 hold plain integers
# there and do not read as these types: query from the first version 4 date (first_date), or
# rewrite the older periods. The column lists equal the Parquet schema the archiver writes
# (tests/tests/ops.rs checks them against deduplicator/src/archive/format.rs).

locals {
  location = "s3://${var.archive_bucket_name}/${var.archive_prefix}"
  # One list per stream: name and Hive type, in the files' column order.
  columns = {
    trades = [
      { name = "trade_id", type = "string" },
      { name = "ts", type = "timestamp" },
      { name = "market_ticker", type = "string" },
      { name = "yes_price", type = "decimal(18,6)" },
      { name = "no_price", type = "decimal(18,6)" },
      { name = "count", type = "decimal(18,2)" },
      { name = "taker_outcome_side", type = "smallint" },
      { name = "taker_book_side", type = "string" },
      { name = "is_block_trade", type = "boolean" },
      { name = "ts_ms", type = "bigint" },
      { name = "source", type = "string" },
      { name = "gatherer_id", type = "string" },
      { name = "received_ms", type = "bigint" },
    ]
    orderbook_deltas = [
      { name = "market_ticker", type = "string" },
      { name = "ts", type = "timestamp" },
      { name = "ts_ms", type = "bigint" },
      { name = "side", type = "smallint" },
      { name = "price", type = "decimal(18,6)" },
      { name = "delta", type = "decimal(18,2)" },
      { name = "occurrence", type = "bigint" },
      { name = "gatherer_key", type = "string" },
      { name = "gatherer_id", type = "string" },
      { name = "received_ms", type = "bigint" },
    ]
    orderbook_snapshots = [
      { name = "market_ticker", type = "string" },
      { name = "ts", type = "timestamp" },
      { name = "gatherer_id", type = "string" },
      { name = "source", type = "string" },
      { name = "conn_epoch", type = "bigint" },
      { name = "sid", type = "bigint" },
      { name = "seq", type = "bigint" },
      { name = "received_ms", type = "bigint" },
      { name = "yes", type = "array<struct<price:decimal(18,6),quantity:decimal(18,2)>>" },
      { name = "no", type = "array<struct<price:decimal(18,6),quantity:decimal(18,2)>>" },
      { name = "last_delta_ts_ms", type = "bigint" },
    ]
    tickers = [
      { name = "market_ticker", type = "string" },
      { name = "ts", type = "timestamp" },
      { name = "ts_ms", type = "bigint" },
      { name = "content_hash", type = "string" },
      { name = "occurrence", type = "bigint" },
      { name = "gatherer_key", type = "string" },
      { name = "body", type = "string" },
      { name = "gatherer_id", type = "string" },
      { name = "received_ms", type = "bigint" },
      { name = "price", type = "decimal(18,6)" },
      { name = "yes_bid", type = "decimal(18,6)" },
      { name = "yes_ask", type = "decimal(18,6)" },
      { name = "yes_bid_size", type = "decimal(18,2)" },
      { name = "yes_ask_size", type = "decimal(18,2)" },
      { name = "volume", type = "decimal(18,2)" },
      { name = "open_interest", type = "decimal(18,2)" },
    ]
    lifecycle = [
      { name = "ticker", type = "string" },
      { name = "event_type", type = "string" },
      { name = "content_hash", type = "string" },
      { name = "occurrence", type = "bigint" },
      { name = "kind", type = "string" },
      { name = "body", type = "string" },
      { name = "received_ms", type = "bigint" },
      { name = "gatherer_id", type = "string" },
    ]
    unknown_messages = [
      { name = "type", type = "string" },
      { name = "market_ticker", type = "string" },
      { name = "content_hash", type = "string" },
      { name = "occurrence", type = "bigint" },
      { name = "channel", type = "string" },
      { name = "body", type = "string" },
      { name = "received_ms", type = "bigint" },
      { name = "gatherer_id", type = "string" },
    ]
    markets = [
      { name = "ticker", type = "string" },
      { name = "updated_ms", type = "bigint" },
      { name = "observed_ms", type = "bigint" },
      { name = "body", type = "string" },
      { name = "gatherer_id", type = "string" },
      { name = "content_hash", type = "string" },
    ]
    events = [
      { name = "ticker", type = "string" },
      { name = "updated_ms", type = "bigint" },
      { name = "observed_ms", type = "bigint" },
      { name = "body", type = "string" },
      { name = "gatherer_id", type = "string" },
      { name = "content_hash", type = "string" },
    ]
    series = [
      { name = "ticker", type = "string" },
      { name = "updated_ms", type = "bigint" },
      { name = "observed_ms", type = "bigint" },
      { name = "body", type = "string" },
      { name = "gatherer_id", type = "string" },
      { name = "content_hash", type = "string" },
    ]
    exchange = [
      { name = "ticker", type = "string" },
      { name = "endpoint", type = "string" },
      { name = "content_hash", type = "string" },
      { name = "occurrence", type = "bigint" },
      { name = "source", type = "string" },
      { name = "body", type = "string" },
      { name = "received_ms", type = "bigint" },
      { name = "gatherer_id", type = "string" },
    ]
  }
}

resource "aws_glue_catalog_database" "this" {
  name        = replace("${var.name}_archive", "-", "_")
  description = "kalshi-data's archive (docs/archive.md): one table per stream, partitioned by date and hour."
}

resource "aws_glue_catalog_table" "stream" {
  for_each      = local.columns
  database_name = aws_glue_catalog_database.this.name
  name          = each.key
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    "classification"                = "parquet"
    "EXTERNAL"                      = "TRUE"
    "projection.enabled"            = "true"
    "projection.date.type"          = "date"
    "projection.date.format"        = "yyyy-MM-dd"
    "projection.date.range"         = "${var.first_date},NOW"
    "projection.date.interval"      = "1"
    "projection.date.interval.unit" = "DAYS"
    "projection.hour.type"          = "integer"
    "projection.hour.range"         = "0,23"
    "projection.hour.digits"        = "2"
    "storage.location.template"     = "${local.location}stream=${each.key}/date=$${date}/hour=$${hour}"
  }

  partition_keys {
    name = "date"
    type = "string"
  }
  partition_keys {
    name = "hour"
    type = "string"
  }

  storage_descriptor {
    location      = "${local.location}stream=${each.key}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = each.value
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}

resource "aws_s3_bucket" "results" {
  bucket_prefix = "${var.name}-athena-results-"
  force_destroy = true
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "results" {
  bucket                  = aws_s3_bucket.results.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "results" {
  bucket = aws_s3_bucket.results.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "results" {
  bucket = aws_s3_bucket.results.id
  rule {
    id     = "expire-results"
    status = "Enabled"
    filter {}
    expiration {
      days = 30
    }
  }
}

resource "aws_athena_workgroup" "this" {
  name          = "${var.name}-archive"
  description   = "Queries over kalshi-data's archive."
  force_destroy = true
  tags          = var.tags

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.bytes_scanned_cutoff_per_query
    engine_version {
      selected_engine_version = "Athena engine version 3"
    }
    result_configuration {
      output_location = "s3://${aws_s3_bucket.results.bucket}/"
      encryption_configuration {
        encryption_option = "SSE_KMS"
      }
    }
  }
}

data "aws_caller_identity" "this" {}
data "aws_region" "this" {}
data "aws_partition" "this" {}

locals {
  glue_arn = "arn:${data.aws_partition.this.partition}:glue:${data.aws_region.this.name}:${data.aws_caller_identity.this.account_id}"
}

data "aws_iam_policy_document" "analyst" {
  statement {
    sid       = "RunQueriesInTheWorkgroup"
    actions   = ["athena:StartQueryExecution", "athena:StopQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults", "athena:GetQueryResultsStream", "athena:ListQueryExecutions", "athena:GetWorkGroup", "athena:BatchGetQueryExecution"]
    resources = [aws_athena_workgroup.this.arn]
  }
  statement {
    sid       = "ListWorkgroupsAndCatalogs"
    actions   = ["athena:ListWorkGroups", "athena:ListDataCatalogs", "athena:ListEngineVersions"]
    resources = ["*"]
  }
  statement {
    sid     = "ReadTheTables"
    actions = ["glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables", "glue:GetPartition", "glue:GetPartitions", "glue:BatchGetPartition"]
    resources = [
      "${local.glue_arn}:catalog",
      "${local.glue_arn}:database/${aws_glue_catalog_database.this.name}",
      "${local.glue_arn}:table/${aws_glue_catalog_database.this.name}/*",
    ]
  }
  statement {
    sid       = "ReadTheArchive"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${var.archive_bucket_arn}/${var.archive_prefix}*"]
  }
  statement {
    sid       = "ListTheArchive"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.archive_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.archive_prefix}*"]
    }
  }
  statement {
    sid       = "WriteAndReadResults"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket", "s3:GetBucketLocation", "s3:ListMultipartUploadParts"]
    resources = [aws_s3_bucket.results.arn, "${aws_s3_bucket.results.arn}/*"]
  }
  statement {
    sid       = "DecryptThroughS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.this.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "analyst" {
  name_prefix = "${var.name}-archive-analyst-"
  description = "Query kalshi-data's archive with Athena (read only)."
  policy      = data.aws_iam_policy_document.analyst.json
  tags        = var.tags
}
