# An internal load balancer that serves nothing: its target group's checks of /health/live
# (the process and all its tasks alive) on port 8080 are what an auto-scaling group with ELB
# health checks acts on. A target group is only checked while a listener uses it, hence the
# listener. Readiness (/health, /health/ready) is for Prometheus and people: an outage of
# Kalshi, a local database or RDS makes a service unready, and replacing it would not help.

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-${var.role}-lb-"
  description = "health-check load balancer of the ${var.role}"
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
  name_prefix        = var.short_prefix
  internal           = true
  load_balancer_type = "application"
  security_groups    = [aws_security_group.lb.id]
  subnets            = var.private_subnet_ids
  tags               = var.tags
}

resource "aws_lb_target_group" "live" {
  name_prefix = var.short_prefix
  port        = 8080
  protocol    = "HTTP"
  vpc_id      = var.vpc_id
  health_check {
    path                = "/health/live"
    port                = "8080"
    matcher             = "200"
    interval            = 30
    timeout             = 10
    healthy_threshold   = 2
    unhealthy_threshold = 4
  }
  tags = var.tags
}

resource "aws_lb_listener" "health" {
  load_balancer_arn = aws_lb.health.arn
  port              = 8080
  protocol          = "HTTP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.live.arn
  }
}
