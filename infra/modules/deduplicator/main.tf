# The deduplicator: an auto-scaling group of exactly one behind an internal load balancer's
# /health check (a failing check replaces the instance). It reaches the gatherers' gRPC and
# RDS; Prometheus reaches its metrics. Its role may connect to RDS as its database user
# (IAM authentication), read RDS events, and write its own prefix of the archive bucket.

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
    description = "AWS APIs (RDS events, S3, SSM) over HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "metrics_from_prometheus" {
  security_group_id            = aws_security_group.deduplicator.id
  description                  = "Prometheus scrapes /metrics"
  ip_protocol                  = "tcp"
  from_port                    = 9464
  to_port                      = 9464
  referenced_security_group_id = var.prometheus_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "health_from_lb" {
  security_group_id            = aws_security_group.deduplicator.id
  description                  = "/health from the load balancer and Prometheus"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-dedup-lb-"
  description = "health-check load balancer of the deduplicator"
  vpc_id      = var.vpc_id
  egress {
    description = "health checks"
    from_port   = 8080
    to_port     = 8080
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
  tags = var.tags
}

resource "aws_lb" "health" {
  name_prefix        = "kdd-"
  internal           = true
  load_balancer_type = "application"
  security_groups    = [aws_security_group.lb.id]
  subnets            = var.private_subnet_ids
  tags               = var.tags
}

resource "aws_lb_target_group" "health" {
  name_prefix = "kdd-"
  port        = 8080
  protocol    = "HTTP"
  vpc_id      = var.vpc_id
  health_check {
    path                = "/health"
    port                = "8080"
    matcher             = "200"
    interval            = 30
    healthy_threshold   = 2
    unhealthy_threshold = 10
  }
  tags = var.tags
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
  statement {
    sid       = "ConnectAsItsDatabaseUser"
    actions   = ["rds-db:connect"]
    resources = ["arn:aws:rds-db:${var.region}:${data.aws_caller_identity.current.account_id}:dbuser:${var.rds_resource_id}/${var.db_user}"]
  }
  statement {
    sid       = "ReadRdsEvents"
    actions   = ["rds:DescribeEvents", "rds:DescribeDBInstances"]
    resources = ["*"] # DescribeEvents has no resource-level permissions
  }
  statement {
    sid       = "WriteItsArchivePrefix"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"]
    resources = ["${var.archive_bucket_arn}/${var.archive_prefix}*"]
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

resource "aws_launch_template" "deduplicator" {
  name_prefix   = "${var.name}-dedup-"
  image_id      = var.ami_id
  instance_type = var.instance_type
  iam_instance_profile {
    arn = aws_iam_instance_profile.deduplicator.arn
  }
  vpc_security_group_ids = [aws_security_group.deduplicator.id]
  metadata_options {
    http_tokens = "required"
  }
  user_data = base64encode(templatefile("${path.module}/user-data.sh.tftpl", {
    release_url = var.release_url
    config      = var.deduplicator_toml
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Role = "kalshi-deduplicator", Name = "deduplicator" })
  }
  tags = var.tags
}

resource "aws_autoscaling_group" "deduplicator" {
  name_prefix               = "${var.name}-dedup-"
  min_size                  = 1
  max_size                  = 1
  desired_capacity          = 1
  vpc_zone_identifier       = var.private_subnet_ids
  health_check_type         = "ELB"
  health_check_grace_period = 300
  target_group_arns         = [aws_lb_target_group.health.arn]
  launch_template {
    id      = aws_launch_template.deduplicator.id
    version = "$Latest"
  }
  tag {
    key                 = "Role"
    value               = "kalshi-deduplicator"
    propagate_at_launch = true
  }
}
