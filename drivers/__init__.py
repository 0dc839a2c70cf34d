"""Instrument drivers, one module per real instrument protocol."""
