# One kind of kalshi-data host: a launch template (Debian AMI, IMDSv2 only, an encrypted gp3
# root volume, the caller's user-data) and an auto-scaling group of `size` instances launched
# from it, the primary instance type first and the fallbacks when a zone has no capacity of it.
# What the group launches carries the tags (instances and their volumes get no provider
# default_tags). The gatherer slots, the deduplicators and the monitoring host are each one.

resource "aws_launch_template" "this" {
  name_prefix   = "${var.name_prefix}-"
  image_id      = var.ami_id
  instance_type = var.instance_type
  iam_instance_profile {
    arn = var.instance_profile_arn
  }
  vpc_security_group_ids = var.security_group_ids
  metadata_options {
    http_tokens = "required"
  }
  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }
  user_data = base64encode(var.user_data)
  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, var.host_tags)
  }
  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, var.host_tags)
  }
  tags = var.tags
}

resource "aws_autoscaling_group" "this" {
  name_prefix               = "${var.name_prefix}-"
  min_size                  = var.size
  max_size                  = var.size
  desired_capacity          = var.size
  vpc_zone_identifier       = var.subnet_ids
  target_group_arns         = var.target_group_arns
  health_check_type         = length(var.target_group_arns) > 0 ? "ELB" : "EC2"
  health_check_grace_period = var.health_check_grace_period
  enabled_metrics           = ["GroupInServiceInstances", "GroupDesiredCapacity"]
  mixed_instances_policy {
    instances_distribution {
      on_demand_allocation_strategy            = "prioritized"
      on_demand_percentage_above_base_capacity = 100
    }
    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.this.id
        version            = aws_launch_template.this.latest_version
      }
      dynamic "override" {
        for_each = concat([var.instance_type], var.fallback_instance_types)
        content {
          instance_type = override.value
        }
      }
    }
  }
  dynamic "tag" {
    # The host's own tags, except Name (the launch template's instance tags give it).
    for_each = { for k, v in merge(var.tags, var.host_tags) : k => v if k != "Name" }
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
