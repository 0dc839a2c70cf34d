"""The deposition run kind: recipes on the sputter and evaporation tools — their schema,
steps, engine, layers and plots, and what the command line shows of them."""
