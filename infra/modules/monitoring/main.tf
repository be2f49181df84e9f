# What a Prometheus + Alertmanager host needs to watch kalshi-data: a security group that the
# services admit for scrapes (metrics 9464, health 8080, node_exporter 9100), and an instance
# profile allowed to discover the instances (ec2:DescribeInstances, for ec2_sd_configs in
# deploy/prometheus/prometheus.yml) and to publish alerts to the SNS topic (Alertmanager's
# sns_configs in deploy/alertmanager/alertmanager.yml). Attach both to your Prometheus host;
# runbooks/alerting.md sets it up.

resource "aws_security_group" "prometheus" {
  name_prefix = "${var.name}-prometheus-"
  description = "Prometheus scrapers"
  vpc_id      = var.vpc_id
  egress {
    description = "scrapes: health 8080, node_exporter 9100, metrics 9464"
    from_port   = 8080
    to_port     = 9464
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr_block]
  }
  egress {
    description = "AWS APIs (EC2 discovery, SNS) and the dead man's switch over HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  tags = merge(var.tags, { Name = "${var.name}-prometheus" })
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

resource "aws_iam_role" "prometheus" {
  name_prefix        = "${var.name}-prometheus-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = var.tags
}

data "aws_iam_policy_document" "prometheus" {
  statement {
    sid       = "DiscoverInstances"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeAvailabilityZones"]
    resources = ["*"] # Describe* calls have no resource-level permissions
  }
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [var.alerts_topic_arn]
  }
}

resource "aws_iam_role_policy" "prometheus" {
  role   = aws_iam_role.prometheus.id
  policy = data.aws_iam_policy_document.prometheus.json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.prometheus.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "prometheus" {
  name_prefix = "${var.name}-prometheus-"
  role        = aws_iam_role.prometheus.name
}
