# Production: RDS PostgreSQL 15, Multi-AZ (synchronous standby; the deduplicator retries
# through failover), encrypted, backed up, IAM authentication on, TLS forced, reachable only
# from the deduplicator (and an optional operator security group).

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  subnet_ids  = var.private_subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "rds" {
  name_prefix = "${var.name}-rds-"
  description = "production PostgreSQL"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-rds" })
}

resource "aws_vpc_security_group_ingress_rule" "from_deduplicator" {
  security_group_id            = aws_security_group.rds.id
  description                  = "the deduplicator, the only writer"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = var.deduplicator_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "from_operators" {
  count                        = var.operator_access ? 1 : 0
  security_group_id            = aws_security_group.rds.id
  description                  = "operators and readers"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = var.operator_security_group_id
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg15-"
  family      = "postgres15"
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "5000"
  }
  parameter {
    # The deduplicator's batches are a few MB; idle sessions are its pool's.
    name  = "idle_in_transaction_session_timeout"
    value = "300000"
  }
  tags = var.tags
}

resource "aws_db_instance" "this" {
  # A fixed identifier (the environment's name, e.g. kalshi-prod), not a prefix: runbooks,
  # alarms and the deduplicator's RDS event checks name it.
  identifier                          = var.name
  engine                              = "postgres"
  engine_version                      = "15"
  instance_class                      = var.instance_class
  allocated_storage                   = var.allocated_storage_gb
  max_allocated_storage               = var.max_allocated_storage_gb
  storage_type                        = "gp3"
  storage_encrypted                   = true
  multi_az                            = true
  db_name                             = "kalshi"
  username                            = "kalshi_admin"
  manage_master_user_password         = true
  iam_database_authentication_enabled = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.rds.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  backup_retention_period             = var.backup_retention_days
  backup_window                       = "03:00-04:00"
  maintenance_window                  = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot               = true
  deletion_protection                 = true
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-final"
  performance_insights_enabled        = true
  auto_minor_version_upgrade          = true
  publicly_accessible                 = false
  tags                                = var.tags
}
