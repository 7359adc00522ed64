"""nexus-telegram-gateway."""
