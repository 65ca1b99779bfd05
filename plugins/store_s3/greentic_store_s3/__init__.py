"""greentic-store-s3: environments, leases and the audit log as objects in an S3 bucket."""

__version__ = "0.1.0"
