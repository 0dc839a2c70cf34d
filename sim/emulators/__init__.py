"""Wire emulators, one module per real instrument protocol."""
