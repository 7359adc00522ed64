"""nexusctl commands, one module per group."""
