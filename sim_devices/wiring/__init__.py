"""Links between the physical model and each kind of simulated device."""
