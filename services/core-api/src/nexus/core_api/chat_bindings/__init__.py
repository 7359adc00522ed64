"""Chat bindings: which chat user acts as which Nexus identity, with which role."""
