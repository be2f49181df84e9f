# The monitoring host: Prometheus (the rules of deploy/prometheus, EC2 discovery in this region),
# Alertmanager (to the alerts topic, and the Watchdog to the dead man's switch) and Grafana (the
# dashboards of deploy/grafana), installed from the deduplicator's release by its monitoring.sh,
# in an auto-scaling group of one (a lost host comes back by itself; its metrics history does
# not: it is on the root volume). A security group the services admit for scrapes (metrics
# 9464, health 8080, node_exporter 9100), an instance profile allowed to discover the instances
# (ec2:DescribeInstances) and to publish to the topic (sns:Publish). Operators reach Grafana
# (3000) and Prometheus (9090) through Session Manager's port forwarding: nothing listens to
# anyone else (runbooks/alerting.md).

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
    description = "AWS APIs (EC2 discovery, SNS, SSM), the dead man's switch, Grafana's repository and the release over HTTPS"
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



module "group" {
  source               = "../host-group"
  name_prefix          = "${var.name}-monitoring"
  ami_id               = var.ami_id
  instance_type        = var.instance_type
  instance_profile_arn = aws_iam_instance_profile.prometheus.arn
  security_group_ids   = [aws_security_group.prometheus.id]
  root_volume_size_gb  = var.root_volume_size_gb
  subnet_ids           = var.private_subnet_ids
  host_tags            = { Role = "kalshi-monitoring", Name = "monitoring" }
  tags                 = var.tags
  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    version              = var.release_version
    release_url          = var.release_url
    release_sha256       = var.release_sha256
    region               = var.region
    alerts_topic_arn     = var.alerts_topic_arn
    grafana_version      = var.grafana_version
    deadmans_switch_flag = var.deadmans_switch_url == "" ? "" : "--deadmans-switch-url '${var.deadmans_switch_url}'"
  })
}
