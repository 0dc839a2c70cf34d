"""The shipped example recipes and cell-test protocols, installed as package data
(`lipon_hw.sequences`), so `lipon-hw run lipon_rf_sputter` works from a wheel install."""
