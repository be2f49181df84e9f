# An example production environment: three gatherers across three AZs, one deduplicator,
# RDS Multi-AZ with IAM authentication, the archive bucket, alarms. Copy this directory, set
# the variables (terraform.tfvars), `terraform init && terraform plan`.

terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.60"
    }
  }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { Project = "kalshi-data", Environment = var.name }
  }
}

module "network" {
  source = "../../modules/network"
  name   = var.name
}

# Prometheus lives elsewhere in most setups; this group is what its instances carry.
resource "aws_security_group" "prometheus" {
  name_prefix = "${var.name}-prometheus-"
  description = "Prometheus scrapers"
  vpc_id      = module.network.vpc_id
  egress {
    description = "scrapes"
    from_port   = 8080
    to_port     = 9464
    protocol    = "tcp"
    cidr_blocks = [module.network.vpc_cidr_block]
  }
}

module "archive" {
  source = "../../modules/archive"
  name   = var.name
}

module "rds" {
  source                         = "../../modules/rds"
  name                           = var.name
  vpc_id                         = module.network.vpc_id
  private_subnet_ids             = module.network.private_subnet_ids
  deduplicator_security_group_id = module.deduplicator.security_group_id
}

module "deduplicator" {
  source                       = "../../modules/deduplicator"
  name                         = var.name
  region                       = var.region
  vpc_id                       = module.network.vpc_id
  vpc_cidr_block               = module.network.vpc_cidr_block
  private_subnet_ids           = module.network.private_subnet_ids
  ami_id                       = var.ami_id
  release_url                  = var.release_url
  deduplicator_toml            = var.deduplicator_toml
  rds_resource_id              = module.rds.resource_id
  archive_bucket_arn           = module.archive.bucket_arn
  prometheus_security_group_id = aws_security_group.prometheus.id
}

module "gatherers" {
  source                         = "../../modules/gatherers"
  name                           = var.name
  region                         = var.region
  vpc_id                         = module.network.vpc_id
  private_subnet_ids             = module.network.private_subnet_ids
  ami_id                         = var.ami_id
  release_url                    = var.release_url
  kalshi_key_id                  = var.kalshi_key_id
  kalshi_key_secret_arn          = var.kalshi_key_secret_arn
  deduplicator_security_group_id = module.deduplicator.security_group_id
  prometheus_security_group_id   = aws_security_group.prometheus.id
}

module "alarms" {
  source            = "../../modules/alarms"
  name              = var.name
  gatherer_asg_name = module.gatherers.autoscaling_group_name
  rds_identifier    = module.rds.identifier
  alert_emails      = var.alert_emails
}
