"""greentic-store-postgres: environments, leases and the audit log in one PostgreSQL database."""

__version__ = "0.1.0"
