"""Per-layer-type handlers, masks and physical removal of neurons."""
