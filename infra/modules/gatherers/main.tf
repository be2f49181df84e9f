# The gatherers: one auto-scaling group of exactly one instance per slot (g1, g2, g3), each
# pinned to its own private subnet and availability zone. The slot is the gatherer's identity:
# it comes from the group, never from the AZ's letter, so a replacement takes over its slot's
# id, and AZ rebalancing cannot move or duplicate one. Each instance has a local PostgreSQL on
# its own EBS volume and the gatherer under systemd, installed by the release's bootstrap
# (deploy/bootstrap/gatherer.sh) after user-data checked the release's SHA-256. At boot it
# points its slot's private DNS name (g2.gatherers.<zone>) at itself; the deduplicator connects
# by name. An internal load balancer health-checks /health/live, and the groups replace an
# instance that fails it (a gatherer whose database never came up is not "healthy").
# gRPC (50051) is reachable only from the deduplicator, metrics (9464) and node_exporter (9100)
# only from Prometheus, health (8080) from the load balancer and Prometheus.

locals {
  slots = {
    for i, slot in var.slots : slot => {
      subnet_id = var.private_subnet_ids[i % length(var.private_subnet_ids)]
      dns_name  = "${slot}.gatherers.${var.dns_zone_name}"
    }
  }
}

resource "aws_security_group" "gatherer" {
  name_prefix = "${var.name}-gatherer-"
  description = "kalshi-data gatherers"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gatherer" })

  egress {
    description = "Kalshi API over HTTPS/WSS (through NAT), AWS APIs, package mirrors"
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

resource "aws_vpc_security_group_ingress_rule" "scrapes_from_prometheus" {
  for_each                     = { metrics = 9464, health = 8080, node_exporter = 9100 }
  security_group_id            = aws_security_group.gatherer.id
  description                  = "Prometheus scrapes ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = var.prometheus_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "health_from_lb" {
  security_group_id            = aws_security_group.gatherer.id
  description                  = "/health/live from the health-check load balancer"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = module.health.security_group_id
}

# Liveness checks (/health/live) through an internal load balancer; the slots' groups use
# them (health_check_type = "ELB").
module "health" {
  source             = "../health-check"
  name               = var.name
  role               = "gatherers"
  short_prefix       = "kgh-"
  vpc_id             = var.vpc_id
  vpc_cidr_block     = var.vpc_cidr_block
  private_subnet_ids = var.private_subnet_ids
  tags               = var.tags
}

# Each slot's database volume: made here, in the slot's zone, never by the launch template, so
# it outlives every instance of the slot. The bootstrap attaches it (lib/data-volume.sh); a
# replaced gatherer comes back with its database, its unmerged records and its instance id.
data "aws_subnet" "slot" {
  for_each = local.slots
  id       = each.value.subnet_id
}

resource "aws_ebs_volume" "data" {
  for_each          = local.slots
  availability_zone = data.aws_subnet.slot[each.key].availability_zone
  size              = var.data_volume_size_gb
  type              = "gp3"
  encrypted         = true
  tags              = merge(var.tags, { Name = "${var.name}-${each.key}-data", Role = "kalshi-gatherer", Slot = each.key })
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

# Each slot's Kalshi key: its own secret (JSON {"key_id", "private_key_pem"}), which only its
# own role may read. Terraform creates the secret, never its value: put it with
# `aws secretsmanager put-secret-value` (runbooks/key-rotation.md).
resource "aws_secretsmanager_secret" "kalshi_key" {
  for_each                = local.slots
  name                    = "kalshi-data/${var.name}/${each.key}"
  description             = "Kalshi API key of gatherer ${each.key}: {\"key_id\": ..., \"private_key_pem\": ...}"
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_cloudwatch_log_group" "gatherers" {
  name              = "/kalshi-data/${var.name}/gatherers"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

# Least privilege, per slot: read its own key, point its own DNS name, write its logs; SSM for
# operators.
resource "aws_iam_role" "gatherer" {
  for_each           = local.slots
  name_prefix        = "${var.name}-${each.key}-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = var.tags
}

data "aws_iam_policy_document" "gatherer" {
  for_each = local.slots
  statement {
    sid       = "ReadItsKalshiKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.kalshi_key[each.key].arn]
  }
  statement {
    sid       = "ReadItsTlsIdentity"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.tls_secret_arns[each.key]]
  }
  statement {
    sid       = "PointItsName"
    actions   = ["route53:ChangeResourceRecordSets"]
    resources = ["arn:aws:route53:::hostedzone/${var.dns_zone_id}"]
    condition {
      test     = "ForAllValues:StringEquals"
      variable = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
      values   = [each.value.dns_name]
    }
  }
  statement {
    sid       = "AttachItsVolume"
    actions   = ["ec2:AttachVolume"]
    resources = [aws_ebs_volume.data[each.key].arn]
  }
  statement {
    sid       = "ToAnInstanceOfItsSlot"
    actions   = ["ec2:AttachVolume"]
    resources = ["arn:aws:ec2:*:*:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Slot"
      values   = [each.key]
    }
  }
  statement {
    sid       = "SeeVolumes"
    actions   = ["ec2:DescribeVolumes"]
    resources = ["*"]
  }
  statement {
    sid       = "WriteItsLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.gatherers.arn}:*"]
  }
}

resource "aws_iam_role_policy" "gatherer" {
  for_each = local.slots
  role     = aws_iam_role.gatherer[each.key].id
  policy   = data.aws_iam_policy_document.gatherer[each.key].json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = local.slots
  role       = aws_iam_role.gatherer[each.key].name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gatherer" {
  for_each    = local.slots
  name_prefix = "${var.name}-${each.key}-"
  role        = aws_iam_role.gatherer[each.key].name
}



# Each slot: a group of one, pinned to the slot's subnet (and so its zone), replaced when it
# fails the load balancer's /health/live after the boot's grace (installing packages and the
# release, creating the cluster and the first registry sync).
module "group" {
  source                    = "../host-group"
  for_each                  = local.slots
  name_prefix               = "${var.name}-${each.key}"
  ami_id                    = var.ami_id
  instance_type             = var.instance_type
  fallback_instance_types   = var.fallback_instance_types
  instance_profile_arn      = aws_iam_instance_profile.gatherer[each.key].arn
  security_group_ids        = [aws_security_group.gatherer.id]
  root_volume_size_gb       = var.root_volume_size_gb
  subnet_ids                = [each.value.subnet_id]
  target_group_arns         = [module.health.target_group_arn]
  health_check_grace_period = 900
  host_tags                 = { Role = "kalshi-gatherer", Name = each.key, Slot = each.key }
  tags                      = var.tags
  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    slot              = each.key
    version           = var.release_version
    release_url       = var.release_url
    release_sha256    = var.release_sha256
    region            = var.region
    kalshi_secret_arn = aws_secretsmanager_secret.kalshi_key[each.key].arn
    tls_secret_arn    = var.tls_secret_arns[each.key]
    dns_zone_id       = var.dns_zone_id
    dns_name          = each.value.dns_name
    data_volume_id    = aws_ebs_volume.data[each.key].id
    log_group         = aws_cloudwatch_log_group.gatherers.name
  })
}
