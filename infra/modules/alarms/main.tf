# CloudWatch alarms to SNS for what Prometheus cannot see when the whole host is gone: a
# gatherer slot with no instance in service or not healthy, no live deduplicator or no standby,
# nothing merged (the lag the active deduplicator publishes), and the production database's health (RDS events for failover, failure and low storage, plus
# CPU and free storage).

resource "aws_sns_topic" "alerts" {
  name_prefix = "${var.name}-alerts-"
  tags        = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alert_emails)
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = each.value
}

# One per slot: its group of one has had no instance in service for 5 minutes (it cannot
# start one: a bad release, a missing key secret, no capacity in its AZ).
resource "aws_cloudwatch_metric_alarm" "gatherer_slot_empty" {
  for_each            = var.gatherer_asg_names
  alarm_name          = "${var.name}-gatherer-${each.key}-not-in-service"
  alarm_description   = "Gatherer slot ${each.key} has no instance in service: redundancy lost (runbooks/gatherer-down.md)"
  namespace           = "AWS/AutoScaling"
  metric_name         = "GroupInServiceInstances"
  dimensions          = { AutoScalingGroupName = each.value }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
  tags                = var.tags
}

# The deduplicators' group short of instances for 10 minutes (launches failing: capacity, a
# bad release, the boot itself): the pair is incomplete or gone, whatever the checks say.
resource "aws_cloudwatch_metric_alarm" "deduplicator_in_service" {
  alarm_name          = "${var.name}-deduplicator-not-all-in-service"
  alarm_description   = "The deduplicators' group has had fewer instances in service than its size for 10 minutes (runbooks/deduplicator-standby.md, runbooks/deduplicator-down.md)"
  namespace           = "AWS/AutoScaling"
  metric_name         = "GroupInServiceInstances"
  dimensions          = { AutoScalingGroupName = var.deduplicator_asg_name }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 10
  comparison_operator = "LessThanThreshold"
  threshold           = var.deduplicator_instances
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
  tags                = var.tags
}

# Live hosts as the load balancers see them (HealthyHostCount of a health-check target group):
# - every gatherer slot: a slot whose bootstrap keeps failing is replaced every ~17 minutes and
#   is "in service" most of that time (its health check's grace), so the in-service alarm above
#   never fires for it; its target is unhealthy throughout, and this one does (10 of the last
#   12 minutes below the slot count);
# - no live deduplicator: nothing reaches production, and after the gatherers' retention
#   (7 days) data is lost for good; independent of Prometheus, which may be down with the rest;
# - the deduplicators' pair incomplete (the standby gone, or the group unable to launch) for
#   20 minutes: one failure from an outage.
locals {
  healthy_hosts = {
    gatherers-not-all-healthy = {
      description = "Fewer healthy gatherers than slots for 10 of the last 12 minutes: a slot is down or keeps failing its bootstrap (runbooks/gatherer-down.md, runbooks/gatherer-replacement.md)"
      dimensions  = var.gatherer_health_dimensions
      statistic   = "Minimum"
      at_least    = length(var.gatherer_asg_names)
      period      = 60
      of          = 12
      breaching   = 10
    }
    deduplicator-none-live = {
      description = "No deduplicator passes its liveness check for 5 minutes: production receives nothing (runbooks/deduplicator-down.md)"
      dimensions  = var.deduplicator_health_dimensions
      statistic   = "Maximum"
      at_least    = 1
      period      = 60
      of          = 5
      breaching   = 5
    }
    deduplicator-pair-incomplete = {
      description = "Fewer healthy deduplicators than the group's size for 20 minutes: no warm standby (runbooks/deduplicator-standby.md)"
      dimensions  = var.deduplicator_health_dimensions
      statistic   = "Minimum"
      at_least    = var.deduplicator_instances
      period      = 300
      of          = 4
      breaching   = 4
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "healthy_hosts" {
  for_each            = local.healthy_hosts
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = each.value.of
  datapoints_to_alarm = each.value.breaching
  comparison_operator = "LessThanThreshold"
  threshold           = each.value.at_least
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
  tags                = var.tags
}

# Nothing merged: the active deduplicator publishes its lag every minute (DedupSyncLagSeconds,
# deploy/bootstrap/lib/publish-lag.sh). The lag over 10 minutes, or no one publishing it (no
# active deduplicator, its host gone, or it unready and not holding the lease) for 10 minutes,
# fires; independent of Prometheus. The gatherers keep 7 days: this is the alarm that must be
# answered well before that.
resource "aws_cloudwatch_metric_alarm" "deduplicator_not_merging" {
  alarm_name          = "${var.name}-deduplicator-not-merging"
  alarm_description   = "Production has not received a gatherer's records for 10 minutes, or no active deduplicator reports its lag (runbooks/dedup-lag.md, runbooks/deduplicator-down.md)"
  namespace           = "kalshi-data"
  metric_name         = "DedupSyncLagSeconds"
  dimensions          = { Environment = var.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 10
  datapoints_to_alarm = 10
  comparison_operator = "GreaterThanThreshold"
  threshold           = 600
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  alarm_name          = "${var.name}-rds-cpu"
  alarm_description   = "Production CPU above 85% for 15 minutes (runbooks/dedup-lag.md)"
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = var.rds_identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 85
  alarm_actions       = [aws_sns_topic.alerts.arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_storage" {
  alarm_name          = "${var.name}-rds-free-storage"
  alarm_description   = "Production free storage below 10 GiB (runbooks/rds-failover.md)"
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = var.rds_identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = 10737418240
  alarm_actions       = [aws_sns_topic.alerts.arn]
  tags                = var.tags
}

resource "aws_db_event_subscription" "rds" {
  name_prefix      = "${var.name}-rds-"
  sns_topic        = aws_sns_topic.alerts.arn
  source_type      = "db-instance"
  source_ids       = [var.rds_identifier]
  event_categories = ["availability", "failover", "failure", "low storage", "maintenance", "recovery"]
  tags             = var.tags
}
