# The deduplicators: an auto-scaling group of `instances` (two: one active, one warm standby,
# spread across the private subnets' zones), installed by the release's bootstrap
# (deploy/bootstrap/deduplicator.sh) after user-data checked the release's SHA-256. Which one
# writes is decided by the lease in production (docs/DESIGN.md, "Active and standby"), not by
# AWS. An internal load balancer's listener keeps its target group checking /health/live: only a
# dead process (or a dead task in it) replaces an instance, so the standby (live, and 200
# "standby" on /health) is kept. Readiness (/health, /health/ready) goes 503 during an RDS
# failover, and replacing the writer then would not help. It reaches the
# gatherers' gRPC (by their private DNS names) and RDS; Prometheus reaches its metrics. Its role
# may connect to RDS as its database user (IAM authentication), read RDS events, write its own
# prefix of the archive bucket and its logs.

data "aws_caller_identity" "current" {}

resource "aws_security_group" "deduplicator" {
  name_prefix = "${var.name}-dedup-"
  description = "kalshi-data deduplicator"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-deduplicator" })

  egress {
    description = "gatherers' gRPC"
    from_port   = 50051
    to_port     = 50051
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
  egress {
    description = "production PostgreSQL (RDS)"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
  egress {
    description = "AWS APIs (RDS events, S3, SSM, CloudWatch Logs) and the release over HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "Debian mirrors over HTTP (apt)"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description = "DNS (the gatherers' private names) through the VPC resolver"
    from_port   = 53
    to_port     = 53
    protocol    = "udp"
    cidr_blocks = [var.vpc_cidr_block]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "scrapes_from_prometheus" {
  for_each                     = { metrics = 9464, health = 8080, node_exporter = 9100 }
  security_group_id            = aws_security_group.deduplicator.id
  description                  = "Prometheus scrapes ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = var.prometheus_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "health_from_lb" {
  security_group_id            = aws_security_group.deduplicator.id
  description                  = "/health from the load balancer and Prometheus"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = module.health.security_group_id
}

# Liveness checks (/health/live) through an internal load balancer; the group uses them.
module "health" {
  source             = "../health-check"
  name               = var.name
  role               = "deduplicator"
  short_prefix       = "kdd-"
  vpc_id             = var.vpc_id
  vpc_cidr_block     = var.vpc_cidr_block
  private_subnet_ids = var.private_subnet_ids
  tags               = var.tags
}

resource "aws_cloudwatch_log_group" "deduplicator" {
  name              = "/kalshi-data/${var.name}/deduplicator"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "deduplicator" {
  name_prefix        = "${var.name}-dedup-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = var.tags
}

data "aws_iam_policy_document" "deduplicator" {
  # This instance only, as this one user. A point-in-time restore makes a new instance (a new
  # resource id): the runbook's `terraform import` and apply give the role the restored one's
  # (runbooks/rds-failover.md).
  statement {
    sid       = "ConnectAsItsDatabaseUser"
    actions   = ["rds-db:connect"]
    resources = ["arn:aws:rds-db:${var.region}:${data.aws_caller_identity.current.account_id}:dbuser:${var.rds_resource_id}/${var.db_user}"]
  }
  statement {
    sid       = "ReadItsTlsIdentity"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.tls_secret_arn]
  }
  statement {
    # The deduplicators issue and renew the link's certificates (renew-tls.sh): they alone
    # read the CA's secret and write every identity's.
    sid       = "IssueTheLinksCertificates"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
    resources = var.tls_issue.secret_arns
  }
  statement {
    # The active one's lag every minute (lib/publish-lag.sh), for the alarm without Prometheus.
    sid       = "PublishItsLag"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resources; the namespace is the condition
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["kalshi-data"]
    }
  }
  statement {
    sid       = "WriteItsLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.deduplicator.arn}:*"]
  }
  statement {
    sid       = "ReadRdsEvents"
    actions   = ["rds:DescribeEvents", "rds:DescribeDBInstances"]
    resources = ["*"] # DescribeEvents has no resource-level permissions
  }
  statement {
    sid       = "WriteItsArchivePrefix"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${var.archive_bucket_arn}/${var.archive_prefix}*"]
  }
  statement {
    # At start the archiver aborts uploads a crash left open under its prefix.
    sid       = "ListItsOpenUploads"
    actions   = ["s3:ListBucketMultipartUploads"]
    resources = [var.archive_bucket_arn]
  }
  statement {
    sid       = "ListItsArchivePrefix"
    actions   = ["s3:ListBucket"]
    resources = [var.archive_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.archive_prefix}*"]
    }
  }
}

resource "aws_iam_role_policy" "deduplicator" {
  role   = aws_iam_role.deduplicator.id
  policy = data.aws_iam_policy_document.deduplicator.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.deduplicator.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "deduplicator" {
  name_prefix = "${var.name}-dedup-"
  role        = aws_iam_role.deduplicator.name
}



# The deduplicators: `instances` (two), one per zone while the zones allow it (the default
# AZRebalance), so one zone's loss leaves the other to take the lease; replaced only when
# /health/live fails (the standby is live).
module "group" {
  source                  = "../host-group"
  name_prefix             = "${var.name}-dedup"
  ami_id                  = var.ami_id
  instance_type           = var.instance_type
  fallback_instance_types = var.fallback_instance_types
  instance_profile_arn    = aws_iam_instance_profile.deduplicator.arn
  security_group_ids      = [aws_security_group.deduplicator.id]
  root_volume_size_gb     = var.root_volume_size_gb
  size                    = var.instances
  subnet_ids              = var.private_subnet_ids
  target_group_arns       = [module.health.target_group_arn]
  host_tags               = { Role = "kalshi-deduplicator", Name = "deduplicator" }
  tags                    = var.tags
  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    version         = var.release_version
    release_url     = var.release_url
    release_sha256  = var.release_sha256
    rds_endpoint    = var.rds_endpoint
    rds_instance_id = var.rds_identifier
    region          = var.region
    zone            = var.dns_zone_name
    log_group       = aws_cloudwatch_log_group.deduplicator.name
    tls_secret_arn  = var.tls_secret_arn
    archive_bucket  = var.archive_bucket_name
    archive_prefix  = var.archive_prefix
    gatherers       = join(",", var.gatherer_slots)
    name            = var.name
    tls_issue_flags = join(" ", concat(
      ["--tls-issue-prefix", var.tls_issue.prefix, "--tls-issue-name", var.name],
      ["--tls-leaf-days", tostring(var.tls_leaf_days), "--tls-renew-within-days", tostring(var.tls_renew_within_days)],
      flatten([for id, names in var.tls_issue.identities : ["--tls-issue-identity", "${id}=${join(",", names)}"]]),
    ))
  })
}
