"""Outputs: what an actuator is (OutputSpec), declared once per device family."""
