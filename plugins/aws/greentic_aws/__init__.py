"""greentic-deployer-aws: revisions as ECS task sets behind weighted ALB forward actions."""

__version__ = "0.1.0"
