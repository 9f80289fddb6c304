"""Modbus pieces shared by the CDU driver: URL parsing and the CDU register map."""
