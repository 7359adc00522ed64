"""nexusctl."""
