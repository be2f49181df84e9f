output "database" {
  description = "The Glue database holding one table per archived stream (trades, orderbook_deltas, ...)."
  value       = aws_glue_catalog_database.this.name
}

output "workgroup" {
  description = "The Athena workgroup analysts query in (results in the results bucket, a scan cutoff per query)."
  value       = aws_athena_workgroup.this.name
}

output "analyst_policy_arn" {
  description = "Attach to an analyst's role or user: read the archive, read the tables, run queries in the workgroup."
  value       = aws_iam_policy.analyst.arn
}

output "results_bucket_name" {
  description = "Where the workgroup writes query results (expired after 30 days)."
  value       = aws_s3_bucket.results.bucket
}
