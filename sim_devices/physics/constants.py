"""Every constant of the physical model, each with its source or reasoning.

Sources are the rows of shared POD-NUMBERS.md unless stated; docs/simulator.md
repeats this table for readers who do not read code.
"""

from __future__ import annotations

# --- Server power -----------------------------------------------------------
# DGX H100: 10.2 kW peak for an 8-GPU server (POD-NUMBERS). Idle ~1.0 kW:
# 8 GPUs at ~75 W (nvidia-smi of an idle Hopper SXM) + 2 CPUs + platform.
SERVER_IDLE_W = 1_000.0
SERVER_PEAK_W = 10_200.0
GPUS_PER_SERVER = 8
GPU_IDLE_W = 75.0  # Hopper SXM idle (POD-NUMBERS)
GPU_PEAK_W = 700.0  # H100 SXM TDP
CPUS_PER_SERVER = 2
CPU_IDLE_W = 100.0  # assumption: a 56-core Xeon idles near 100 W
CPU_PEAK_W = 350.0  # Xeon Platinum 8480C TDP (the DGX H100 CPU)
# The rest (NVSwitches, NICs, memory, fans, PSU losses) is peak - GPUs - CPUs.

# A BMC "caps the server's power within 2 s" (DEVICES.md); a first-order lag of
# 0.4 s reaches 99 % of a step in 5 tau = 2 s.
SERVER_POWER_TAU_S = 0.4

# Fraction of server heat into the liquid: 85-95 % for GPU racks (POD-NUMBERS,
# low confidence); the middle of the range.
LIQUID_HEAT_FRACTION = 0.90

# Hopper SXM shutdown temperature 92 C (POD-NUMBERS): above it the server's
# hardware protection powers it off until its chassis power is cycled.
GPU_SHUTDOWN_C = 92.0

# --- Coolant (PG25, propylene glycol 25 %) -----------------------------------
PG25_DENSITY_KG_M3 = 1_020.0  # PG25 at ~30 C
PG25_CP_J_KGK = 3_900.0  # PG25 at ~30 C
# Secondary flow 1.5 L/min per kW (OCP guideline, POD-NUMBERS); the design
# point is 100 % pump speed with every server at peak power.
DESIGN_FLOW_LPM_PER_KW = 1.5
# Loop differential pressure 0.5-3.0 bar (POD-NUMBERS): 2.0 bar at 100 % speed,
# so the CDU's default local dp setpoint of 150 kPa sits at ~87 % speed.
DESIGN_DP_KPA = 200.0
# Return-side static pressure held by the expansion vessel (assumption: 1.5 bar).
STATIC_PRESSURE_KPA = 150.0
# Pump spin-up/spin-down: a first-order lag on flow (assumption: ~2 s for a
# canned-motor CDU pump to reach speed).
PUMP_FLOW_TAU_S = 2.0

# Coolant held by each server's cold plates and hoses, and by each rack's
# manifolds (assumption: 4 L per server, 20 L per rack manifold pair).
SERVER_COOLANT_L = 4.0
RACK_MANIFOLD_COOLANT_L = 20.0

# --- Heat exchanger to facility water ---------------------------------------
WATER_DENSITY_KG_M3 = 998.0
WATER_CP_J_KGK = 4_186.0
# CDU approach 3 K (best) to 5 K (POD-NUMBERS): 4 K at full valve, design load.
DESIGN_APPROACH_K = 4.0
# Facility water flow at full valve equals the secondary design flow
# (assumption: the plate HX is sized for balanced flows). Valve is linear.
FACILITY_FLOW_RATIO = 1.0
# The supply loop's plant time constant: 60 s is "a fair start" (POD-NUMBERS).
SUPPLY_TAU_S = 60.0
# Convective film coefficients scale ~ flow^0.8 (Dittus-Boelter), both sides.
CONVECTION_EXPONENT = 0.8

# --- Cold plates -------------------------------------------------------------
# Published: < 0.03 K/W per plate (GB200 target) and ~0.066 K/W
# junction-to-coolant at 700 W, 8 L/min (POD-NUMBERS). Our per-plate flow is
# the server's design flow split over its plates, which no source gives, so we
# take 0.045 K/W at design flow, between the two figures (700 W -> +31.5 K):
# conduction through die/TIM/base 0.015 K/W (flow-independent) and convection
# 0.030 K/W at design flow, scaling as flow^-0.8 (Dittus-Boelter).
GPU_R_COND_K_W = 0.015
GPU_R_CONV_DESIGN_K_W = 0.030
# CPU cold plates: larger die, lower flux (assumption: 0.09 K/W total at design).
CPU_R_COND_K_W = 0.040
CPU_R_CONV_DESIGN_K_W = 0.050
# Die plus plate thermal mass: GPU temperatures follow load within seconds.
CHIP_TAU_S = 5.0
# Below this fraction of design flow the plate is effectively stagnant
# (natural convection/conduction only); keeps R finite at zero flow.
MIN_FLOW_FRACTION = 0.01
# Reported temperatures are clamped here: beyond it the hardware is dead.
MAX_REPORTED_C = 125.0

# --- Air side ----------------------------------------------------------------
# Room inlet air: ASHRAE A1 recommended 18-27 C; 25 C.
AIR_INLET_C = 25.0
AIR_DENSITY_KG_M3 = 1.2
AIR_CP_J_KGK = 1_005.0
# A liquid-cooled 8-GPU chassis still moves air for DIMMs, NICs and PSUs
# (assumption: 0.10 m^3/s = ~210 CFM at 100 % duty, linear in duty).
AIR_FLOW_DESIGN_M3_S = 0.10
MIN_FAN_DUTY_FRACTION = 0.05  # natural draught when fans are stopped
AIR_TAU_S = 10.0
FANS_PER_SERVER = 4
FAN_MAX_RPM = 16_000.0  # typical 80 mm server fan at 100 % duty
DEFAULT_FAN_DUTY_PCT = 40.0

# --- Reservoir and leaks -----------------------------------------------------
RESERVOIR_VOLUME_L = 100.0
RESERVOIR_START_PCT = 80.0
# Below this level the pump draws air and cavitates: flow collapses.
RESERVOIR_CAVITATION_PCT = 5.0
# A leaking fitting at design dp loses 2 L/min (assumption); orifice flow
# scales with sqrt(dp), and stops when the rack's supply is isolated.
LEAK_RATE_LPM = 2.0

# --- Facility ----------------------------------------------------------------
# ASHRAE W27 class facility water (POD-NUMBERS): supply at most 27 C; 24 C.
FACILITY_SUPPLY_C = 24.0

# --- Per-server spread (deterministic for a seed) ----------------------------
# Real servers of one model differ by a few percent in idle power and in the
# thermal resistance of their plates (mounting pressure, TIM).
IDLE_POWER_SPREAD = 0.03
THERMAL_R_SPREAD = 0.05
