# An example production environment: three gatherer slots across three AZs, one deduplicator,
# RDS Multi-AZ with IAM authentication, the archive bucket, private DNS for discovery, alarms,
# what a Prometheus host needs, and an operators' security group. Copy this directory, set the
# variables (terraform.tfvars), then follow infra/README.md ("A first apply").

terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }
  # State in S3 with S3-native locking (use_lockfile, Terraform >= 1.10): the bucket, key and
  # region come from backend.hcl (copy backend.hcl.example): terraform init -backend-config=backend.hcl
  backend "s3" {}
}

locals {
  # default_tags do not reach what an auto-scaling group launches: the modules tag those too.
  tags = { Project = "kalshi-data", Environment = var.name }
  # The services' instance types, the primary first; only zones that offer all are used.
  instance_types = var.instance_types
}

provider "aws" {
  region = var.region
  default_tags {
    tags = local.tags
  }
}

module "network" {
  source         = "../../modules/network"
  name           = var.name
  tags           = local.tags
  instance_types = local.instance_types
}

module "monitoring" {
  source              = "../../modules/monitoring"
  name                = var.name
  region              = var.region
  vpc_id              = module.network.vpc_id
  vpc_cidr_block      = module.network.vpc_cidr_block
  private_subnet_ids  = module.network.private_subnet_ids
  ami_id              = var.ami_id
  release_url         = var.release_url
  release_version     = var.release_version
  release_sha256      = var.deduplicator_release_sha256
  alerts_topic_arn    = module.alarms.sns_topic_arn
  deadmans_switch_url = var.deadmans_switch_url
  tags                = local.tags
}

# Operators' hosts (a bastion-less admin instance, a VPN endpoint, CI runners) carry this
# group: RDS admits it on 5432 (psql with IAM authentication, runbooks/operator-access.md).
# Hosts themselves are reached with SSM Session Manager, never SSH.
resource "aws_security_group" "operator" {
  name_prefix = "${var.name}-operator-"
  description = "kalshi-data operators"
  vpc_id      = module.network.vpc_id
  egress {
    description = "production PostgreSQL"
    from_port   = 5432
    to_port     = 5432
    protocol    = "tcp"
    cidr_blocks = [module.network.vpc_cidr_block]
  }
  egress {
    description = "AWS APIs (SSM, RDS auth tokens) over HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  tags = { Name = "${var.name}-operator" }
}

module "pki" {
  source        = "../../modules/pki"
  name          = var.name
  slots         = var.slots
  dns_zone_name = module.network.dns_zone_name
}

module "archive" {
  source = "../../modules/archive"
  name   = var.name
}

module "athena" {
  source              = "../../modules/athena"
  name                = var.name
  archive_bucket_name = module.archive.bucket_name
  archive_bucket_arn  = module.archive.bucket_arn
  first_date          = var.archive_first_date
}

module "rds" {
  source                         = "../../modules/rds"
  name                           = var.name
  vpc_id                         = module.network.vpc_id
  private_subnet_ids             = module.network.private_subnet_ids
  deduplicator_security_group_id = module.deduplicator.security_group_id
  operator_access                = true
  operator_security_group_id     = aws_security_group.operator.id
}

module "deduplicator" {
  source                  = "../../modules/deduplicator"
  tags                    = local.tags
  instance_type           = local.instance_types[0]
  fallback_instance_types = slice(local.instance_types, 1, length(local.instance_types))
  name                    = var.name
  region                  = var.region
  vpc_id                  = module.network.vpc_id
  vpc_cidr_block          = module.network.vpc_cidr_block
  private_subnet_ids      = module.network.private_subnet_ids
  ami_id                  = var.ami_id
  release_url             = var.release_url
  release_version         = var.release_version
  release_sha256          = var.deduplicator_release_sha256
  rds_endpoint            = module.rds.endpoint
  rds_identifier          = module.rds.identifier
  rds_resource_id         = module.rds.resource_id
  dns_zone_name           = module.network.dns_zone_name
  tls_secret_arn          = module.pki.secret_arns["deduplicator"]
  gatherer_slots          = var.slots
  tls_issue = {
    prefix      = module.pki.secret_prefix
    identities  = module.pki.identities
    secret_arns = concat(values(module.pki.secret_arns), [module.pki.ca_signing_secret_arn])
  }
  archive_bucket_arn           = module.archive.bucket_arn
  archive_bucket_name          = module.archive.bucket_name
  prometheus_security_group_id = module.monitoring.security_group_id
}

module "gatherers" {
  source                         = "../../modules/gatherers"
  tags                           = local.tags
  instance_type                  = local.instance_types[0]
  fallback_instance_types        = slice(local.instance_types, 1, length(local.instance_types))
  name                           = var.name
  region                         = var.region
  vpc_id                         = module.network.vpc_id
  vpc_cidr_block                 = module.network.vpc_cidr_block
  private_subnet_ids             = module.network.private_subnet_ids
  dns_zone_id                    = module.network.dns_zone_id
  dns_zone_name                  = module.network.dns_zone_name
  ami_id                         = var.ami_id
  release_url                    = var.release_url
  release_version                = var.release_version
  release_sha256                 = var.gatherer_release_sha256
  tls_secret_arns                = module.pki.secret_arns
  slots                          = var.slots
  deduplicator_security_group_id = module.deduplicator.security_group_id
  prometheus_security_group_id   = module.monitoring.security_group_id
}

module "alarms" {
  source                         = "../../modules/alarms"
  name                           = var.name
  gatherer_asg_names             = module.gatherers.autoscaling_group_names
  gatherer_health_dimensions     = module.gatherers.health_metric_dimensions
  deduplicator_health_dimensions = module.deduplicator.health_metric_dimensions
  deduplicator_instances         = module.deduplicator.instances
  deduplicator_asg_name          = module.deduplicator.autoscaling_group_name
  rds_identifier                 = module.rds.identifier
  alert_emails                   = var.alert_emails
}
