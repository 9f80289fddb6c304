"""The pod power budget and breaker protection (docs/power.md)."""
