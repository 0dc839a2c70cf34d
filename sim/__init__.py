"""The simulated lab: simpy-clocked physics and byte-exact instrument emulators."""
