"""nexus-board-sync."""
