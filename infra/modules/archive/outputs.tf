output "bucket_arn" {
  description = "The archive bucket."
  value       = aws_s3_bucket.this.arn
}

output "bucket_name" {
  description = "The archive bucket's name."
  value       = aws_s3_bucket.this.bucket
}
