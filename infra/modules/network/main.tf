# A VPC across three availability zones: a public subnet per AZ (NAT gateways, nothing else)
# and a private subnet per AZ for the gatherers, the deduplicator and RDS.

data "aws_availability_zones" "available" {
  state = "available"
  # Zones only: Local Zones and Wavelength zones carry no RDS Multi-AZ and few instance types.
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

# The zones that offer every instance type the services may run on (their primary types and
# the fallbacks): a zone without one would leave a slot's group unable to launch.
data "aws_ec2_instance_type_offerings" "each" {
  for_each      = toset(var.instance_types)
  location_type = "availability-zone"
  filter {
    name   = "instance-type"
    values = [each.key]
  }
}

locals {
  offering = [for o in data.aws_ec2_instance_type_offerings.each : toset(o.locations)]
  azs = slice(sort([
    for z in data.aws_availability_zones.available.names : z
    if alltrue([for l in local.offering : contains(l, z)])
  ]), 0, 3)
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = "${var.name}-vpc" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-igw" })
}

resource "aws_subnet" "public" {
  count                   = 3
  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.cidr_block, 8, count.index)
  map_public_ip_on_launch = false
  tags                    = merge(var.tags, { Name = "${var.name}-public-${local.azs[count.index]}" })
}

resource "aws_subnet" "private" {
  count             = 3
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.cidr_block, 8, 10 + count.index)
  tags              = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }
  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route_table_association" "public" {
  count          = 3
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# One NAT gateway per AZ: a gatherer must reach Kalshi even when another AZ is down.
resource "aws_eip" "nat" {
  count  = 3
  domain = "vpc"
  tags   = merge(var.tags, { Name = "${var.name}-nat-${local.azs[count.index]}" })
}

resource "aws_nat_gateway" "this" {
  count         = 3
  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(var.tags, { Name = "${var.name}-nat-${local.azs[count.index]}" })
}

resource "aws_route_table" "private" {
  count  = 3
  vpc_id = aws_vpc.this.id
  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this[count.index].id
  }
  tags = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route_table_association" "private" {
  count          = 3
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# Service discovery: a private zone of this VPC only. Each gatherer slot's instance points
# <slot>.gatherers.<zone> at itself at boot (deploy/bootstrap/gatherer.sh); the deduplicator
# connects by those names, so a replaced gatherer needs no configuration change anywhere.
resource "aws_route53_zone" "private" {
  name    = var.dns_zone_name
  comment = "kalshi-data service discovery (${var.name})"
  vpc {
    vpc_id = aws_vpc.this.id
  }
  tags = var.tags
}

# S3 without the NAT gateways: archive uploads (and the release, when it lives in S3) go through
# this gateway endpoint, free of NAT's per-GB charge and of its failure.
data "aws_region" "current" {}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  tags              = merge(var.tags, { Name = "${var.name}-s3" })
}
