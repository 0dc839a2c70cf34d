"""The cell-test run kind: protocols on potentiostat channels — their schema, checks,
channel programs, cycle figures, results, exports and plots, and what the command line
shows of them."""
