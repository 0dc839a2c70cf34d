"""lipon-hw: instrument control and test automation for LiPON thin-film battery lines."""

__version__ = "0.1.0"
