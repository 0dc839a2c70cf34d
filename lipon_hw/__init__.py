"""lipon-hw: instrument control and test automation for LiPON thin-film battery lines.

The Python API (`lipon_hw.api`): `open_instrument` one driver by its address,
`connect` a station (default: the simulated lab) and `advance` its clock, `run` a recipe
or a cell-test protocol and read its `readings()` as a table.
"""

from lipon_hw.api import (
    ConnectedStation,
    Run,
    close_instrument,
    connect,
    open_instrument,
    open_run,
    run,
)

__version__ = "0.1.0"
__all__ = ["ConnectedStation", "Run", "close_instrument", "connect", "open_instrument",
           "open_run", "run", "__version__"]
