# The gatherers: an auto-scaling group of 3 (max 4, so a replacement can start before the old
# one is gone) spread over three AZs, each instance with a local PostgreSQL + TimescaleDB and the
# gatherer under systemd (deploy/systemd/kalshi-gatherer.service). gRPC (50051) is reachable
# only from the deduplicator, metrics (9464) only from Prometheus, health (8080) from both.

resource "aws_security_group" "gatherer" {
  name_prefix = "${var.name}-gatherer-"
  description = "kalshi-data gatherers"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gatherer" })

  egress {
    description = "Kalshi API over HTTPS/WSS (through NAT), package mirrors"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "grpc_from_deduplicator" {
  security_group_id            = aws_security_group.gatherer.id
  description                  = "gRPC cursor API, deduplicator only"
  ip_protocol                  = "tcp"
  from_port                    = 50051
  to_port                      = 50051
  referenced_security_group_id = var.deduplicator_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "metrics_from_prometheus" {
  security_group_id            = aws_security_group.gatherer.id
  description                  = "Prometheus scrapes /metrics"
  ip_protocol                  = "tcp"
  from_port                    = 9464
  to_port                      = 9464
  referenced_security_group_id = var.prometheus_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "health_from_prometheus" {
  security_group_id            = aws_security_group.gatherer.id
  description                  = "/health for probes"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = var.prometheus_security_group_id
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

# Least privilege: read its own Kalshi key from Secrets Manager, and SSM for operators.
resource "aws_iam_role" "gatherer" {
  name_prefix        = "${var.name}-gatherer-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = var.tags
}

data "aws_iam_policy_document" "gatherer" {
  statement {
    sid       = "ReadKalshiKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.kalshi_key_secret_arn]
  }
}

resource "aws_iam_role_policy" "gatherer" {
  role   = aws_iam_role.gatherer.id
  policy = data.aws_iam_policy_document.gatherer.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.gatherer.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gatherer" {
  name_prefix = "${var.name}-gatherer-"
  role        = aws_iam_role.gatherer.name
}

resource "aws_launch_template" "gatherer" {
  name_prefix   = "${var.name}-gatherer-"
  image_id      = var.ami_id
  instance_type = var.instance_type
  iam_instance_profile {
    arn = aws_iam_instance_profile.gatherer.arn
  }
  vpc_security_group_ids = [aws_security_group.gatherer.id]
  metadata_options {
    http_tokens = "required"
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }
  user_data = base64encode(templatefile("${path.module}/user-data.sh.tftpl", {
    release_url           = var.release_url
    kalshi_key_id         = var.kalshi_key_id
    kalshi_key_secret_arn = var.kalshi_key_secret_arn
    region                = var.region
  }))
  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Role = "kalshi-gatherer" })
  }
  tags = var.tags
}

resource "aws_autoscaling_group" "gatherer" {
  name_prefix         = "${var.name}-gatherer-"
  min_size            = 3
  max_size            = 4
  desired_capacity    = 3
  vpc_zone_identifier = var.private_subnet_ids
  health_check_type   = "EC2"
  # The gatherer needs a few minutes to install, sync the registry and subscribe.
  health_check_grace_period = 600
  capacity_rebalance        = false
  launch_template {
    id      = aws_launch_template.gatherer.id
    version = "$Latest"
  }
  enabled_metrics = ["GroupInServiceInstances", "GroupDesiredCapacity"]
  tag {
    key                 = "Role"
    value               = "kalshi-gatherer"
    propagate_at_launch = true
  }
  dynamic "tag" {
    for_each = var.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
