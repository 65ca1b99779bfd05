"""greentic-deployer-k8s: revisions as Kubernetes Deployments, traffic as Gateway API HTTPRoute weights."""

__version__ = "0.1.0"
