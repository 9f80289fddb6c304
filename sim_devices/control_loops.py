"""The pod's recommended control loops, as `megapod-sim run --write-config`
writes them. docs/control.md gives each number's reason; the plant study
behind them is bench/bench_control_plant.py. Keep the three in step.
"""

from __future__ import annotations

import json

from sim_devices.physics import constants as k
from sim_devices.profiles import CDU_ID, PodLayout

# Supply temperature -> facility valve (docs/control.md).
SUPPLY_SETPOINT_C = 30.0
SUPPLY_SETPOINT_LIMITS_C = (28.0, 40.0)
SUPPLY_KP = 10.0  # % per K
SUPPLY_KI = 0.25  # % per K·s
SUPPLY_FILTER_S = 5.0
VALVE_SLEW_PER_S = 5.0
VALVE_DEADBAND_PCT = 0.2
# valve % = 79 % × IT power / rated IT power − 3.7 % (24 C facility water, 30 C supply)
VALVE_FF_PCT_AT_RATED = 79.0
VALVE_FF_BIAS_PCT = -3.7
# Coolant flow -> pumps: 100 % is the design flow at rated IT power.
PUMP_FLOOR_PCT = 20.0
PUMP_SLEW_PER_S = 20.0
GPU_TRIM_SETPOINT_C = 75.0  # 12 K below Hopper's 87 C max operating
GPU_TRIM_KP = 4.0
GPU_TRIM_KI = 0.2
# Fan zones: duty from outlet air, boost below the fans' lower-critical speed.
FAN_CURVE = ((35.0, 30.0), (45.0, 50.0), (55.0, 100.0))
FAN_HYSTERESIS_K = 2.0
FAN_MIN_RPM = 1000.0
BMC_POLL_S = 2.0


def _s(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


def _it_power() -> str:
    return '{devices = "pdu", point = "power_w", aggregate = "sum"}'


def default_loops(layout: PodLayout) -> list[str]:
    """The TOML lines of the recommended loops for this pod."""
    rated_w = layout.server_count * k.SERVER_PEAK_W
    low, high = SUPPLY_SETPOINT_LIMITS_C
    cdu = CDU_ID
    curve = ", ".join(f"[{x:g}, {y:g}]" for x, y in FAN_CURVE)
    return [
        "",
        "# -- Control loops (docs/control.md) --",
        "",
        "[[loop]]",
        'id = "supply-temp"',
        'controller = "pid"',
        f'input = "{cdu}.supply_temp_c"',
        f"input_filter_s = {SUPPLY_FILTER_S:g}",
        f"setpoint = {SUPPLY_SETPOINT_C:g}",
        f"setpoint_min = {low:g}",
        f"setpoint_max = {high:g}",
        f"kp = {SUPPLY_KP:g}",
        f"ki = {SUPPLY_KI:g}",
        f"output = {_s(f'{cdu}.facility_valve_pct')}",
        f"slew_up_per_s = {VALVE_SLEW_PER_S:g}",
        f"slew_down_per_s = {VALVE_SLEW_PER_S:g}",
        f"deadband = {VALVE_DEADBAND_PCT:g}",
        'failsafe_return = "restore"',
        "period_s = 1.0",
        "stale_after_s = 0.75",
        f"feed_forward = {{input = {_it_power()}, "
        f"gain = {VALVE_FF_PCT_AT_RATED / rated_w:.6g}, bias = {VALVE_FF_BIAS_PCT:g}}}",
        "",
        "[[zone]]",
        'id = "pumps"',
        f"output = {_s(f'{cdu}.pump_speed_pct')}",
        f"floor = {PUMP_FLOOR_PCT:g}",
        "",
        "[[loop]]",
        'id = "pump-flow"',
        'controller = "demand"',
        f"input = {_it_power()}",
        f"gain = {100.0 / rated_w:.6g}",
        f"output = {_s(f'{cdu}.pump_speed_pct')}",
        'zone = "pumps"',
        f"slew_up_per_s = {PUMP_SLEW_PER_S:g}",
        f"slew_down_per_s = {PUMP_SLEW_PER_S:g}",
        "deadband = 0.2",
        "period_s = 1.0",
        "",
        "[[loop]]",
        # Never wins (its demand is the floor); with the supply temperature unknown
        # it sends the pumps to failsafe too: full flow is the safe choice then.
        'id = "pump-supply-guard"',
        'controller = "demand"',
        f'input = "{cdu}.supply_temp_c"',
        "gain = 0",
        f"bias = {PUMP_FLOOR_PCT:g}",
        f"output = {_s(f'{cdu}.pump_speed_pct')}",
        'zone = "pumps"',
        "period_s = 1.0",
        "stale_after_s = 0.75",
        "",
        "[[loop]]",
        'id = "pump-gpu-trim"',
        'controller = "pid"',
        'input = {devices = "bmc", point = "gpu*_temp_c", aggregate = "max"}',
        f"setpoint = {GPU_TRIM_SETPOINT_C:g}",
        "setpoint_min = 60.0",
        "setpoint_max = 85.0",
        f"kp = {GPU_TRIM_KP:g}",
        f"ki = {GPU_TRIM_KI:g}",
        f"output = {_s(f'{cdu}.pump_speed_pct')}",
        'zone = "pumps"',
        f"slew_up_per_s = {PUMP_SLEW_PER_S:g}",
        f"slew_down_per_s = {PUMP_SLEW_PER_S:g}",
        f"period_s = {BMC_POLL_S:g}",
        "",
        "[[loop]]",
        'id = "fan-zone"',
        'controller = "curve"',
        'scope = "each"',
        'devices = "bmc"',
        'input = {point = "outlet_temp_c"}',
        f"curve = [{curve}]",
        f"hysteresis = {FAN_HYSTERESIS_K:g}",
        'output = "fan_duty_pct"',
        f"period_s = {BMC_POLL_S:g}",
        "deadband = 1.0",
        f'boost = {{point = "fan*_rpm", below = {FAN_MIN_RPM:g}}}',
    ]
