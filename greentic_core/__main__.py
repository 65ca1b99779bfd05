"""``python -m greentic_core`` runs the ``greentic-deployer`` CLI."""

from .cli import main

main()
