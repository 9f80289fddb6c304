"""The simulated CDU's request handling, byte for byte, without sockets."""

from __future__ import annotations

import struct

import pytest

from sim_devices.cdu import CduState, SimulatedCdu


def sim(**state: object) -> SimulatedCdu:
    return SimulatedCdu(CduState(**state), physics=False)  # type: ignore[arg-type]


def test_read_input_registers_pdu() -> None:
    cdu = sim(supply_temp_c=-5.25, flow_lpm=612.3)
    reply = cdu.handle_pdu(1, bytes.fromhex("04 0000 0005"))
    assert reply is not None
    assert reply[:2] == bytes((0x04, 10))
    words = struct.unpack(">5h", reply[2:])
    assert words[0] == -525
    assert words[4] == 6123


def test_exception_02_for_unmapped_addresses() -> None:
    cdu = sim()
    assert cdu.handle_pdu(1, bytes.fromhex("04 0010 0003")) == b"\x84\x02"  # runs past 17
    assert cdu.handle_pdu(1, bytes.fromhex("03 0000 0001")) == b"\x83\x02"  # no holding at 0
    assert cdu.handle_pdu(1, bytes.fromhex("06 006E 0001")) == b"\x86\x02"  # 110 unmapped
    assert cdu.writes == []


def test_exception_03_leaves_the_value_unchanged() -> None:
    cdu = sim()
    assert cdu.handle_pdu(1, bytes.fromhex("06 0066 05DC")) == b"\x86\x03"  # 102 := 1500
    assert cdu.state.pump_speed_setpoint_pct == 60.0
    assert cdu.handle_pdu(1, bytes.fromhex("03 0064 0000")) == b"\x83\x03"  # count 0


def test_write_multiple_is_all_or_nothing() -> None:
    cdu = sim()
    # 104 := 400 (fine), 105 := 601 (out of range): nothing may change.
    assert cdu.handle_pdu(1, bytes.fromhex("10 0068 0002 04 0190 0259")) == b"\x90\x03"
    assert cdu.state.facility_valve_setpoint_pct == 50.0
    assert cdu.handle_pdu(1, bytes.fromhex("10 0068 0002 04 0190 0258")) == bytes.fromhex(
        "10 0068 0002"
    )
    assert (cdu.state.facility_valve_setpoint_pct, cdu.state.watchdog_timeout_s) == (40.0, 600)


def test_local_mode_refuses_remote_writes_with_04() -> None:
    cdu = sim(local_mode=True)
    for address in (100, 101, 102, 103, 104, 108):
        pdu = struct.pack(">BHH", 0x06, address, 1)
        assert cdu.handle_pdu(1, pdu) == b"\x86\x04", address
    # The watchdog settings stay writable from the network.
    assert cdu.handle_pdu(1, bytes.fromhex("06 006A 0007")) == bytes.fromhex("06 006A 0007")
    assert cdu.writes == [(106, 7)]


def test_lost_heartbeats_are_acknowledged_but_the_watchdog_runs_out() -> None:
    cdu = sim(watchdog_timeout_s=4)
    heartbeat = bytes.fromhex("06 006A 0001")
    cdu.heartbeats_lost = True
    for _ in range(50):  # 5 s of heartbeats every 100 ms, each answered
        assert cdu.handle_pdu(1, heartbeat) == heartbeat
        cdu.step(0.1)
    assert cdu.state.watchdog_expired
    cdu.heartbeats_lost = False
    cdu.handle_pdu(1, heartbeat)
    assert not cdu.state.watchdog_expired


def test_other_unit_and_function() -> None:
    cdu = sim()
    assert cdu.handle_pdu(7, bytes.fromhex("04 0000 0001")) == b"\x84\x0b"
    assert cdu.handle_pdu(1, bytes.fromhex("2B 0E 01 00")) == b"\xab\x01"
    assert cdu.handle_pdu(1, bytes.fromhex("03 0064")) == b"\x83\x03"  # truncated


def test_alarm_reset_acts_on_rising_edge_only() -> None:
    cdu = sim()
    cdu.pump_fault(1)
    assert cdu.state.alarm_code == 1
    cdu.handle_pdu(1, bytes.fromhex("06 0064 0007"))  # rising edge of b2
    assert (cdu.state.pump1_fault, cdu.state.alarm_code) == (False, 0)
    cdu.pump_fault(1)
    cdu.handle_pdu(1, bytes.fromhex("06 0064 0007"))  # b2 still high: no edge
    assert cdu.state.pump1_fault is True


def test_seized_pump_fault_survives_reset() -> None:
    cdu = sim()
    cdu.pump_seize(2)
    cdu.handle_pdu(1, bytes.fromhex("06 0064 0007"))
    assert cdu.state.pump2_fault is True
    assert cdu.state.alarm_code == 2


def test_overrides_replace_the_live_value() -> None:
    cdu = sim(supply_temp_c=30.0)
    cdu.stick_input(0)
    cdu.state.supply_temp_c = 35.0
    assert cdu.input_registers()[0] == 3000
    cdu.override_input(4, 0xFFFF)
    assert cdu.input_registers()[4] == 0xFFFF
    cdu.clear_override()
    assert cdu.input_registers()[0] == 3500


def test_pump_restarts_when_one_becomes_healthy_again() -> None:
    cdu = sim()
    cdu.pump_fault(1)
    cdu.pump_fault(2)
    for _ in range(5):
        cdu.step(0.1)
    assert cdu.state.running_pump == 0
    assert cdu.state.alarm_code == 3
    cdu.state.pump2_fault = False  # e.g. after a drive reset on site
    cdu.step(0.1)
    assert cdu.state.running_pump == 2
    cdu.step(1.0)
    assert cdu.state.pump2_speed_pct > 0


def test_changeover_waits_for_the_changeover_time() -> None:
    cdu = sim()
    cdu.pump_fault(1)
    cdu.step(0.1)
    cdu.step(0.1)
    assert cdu.state.running_pump == 1  # 0.2 s < 0.25 s
    cdu.step(0.1)
    assert cdu.state.running_pump == 2


def test_placeholder_physics_follows_q_equals_m_cp_dt() -> None:
    cdu = SimulatedCdu(
        CduState(heat_load_w=390_000, control_mode=0, watchdog_timeout_s=0), physics=True
    )
    cdu.state.pump_speed_setpoint_pct = 60.0
    for _ in range(600):
        cdu.step(0.1)
    s = cdu.state
    assert s.flow_lpm == 600.0  # flow ∝ speed
    assert s.diff_pressure_kpa == 300.0 * 0.36  # Δp ∝ speed²
    mass_flow = 600.0 / 60.0 * 1.02
    assert s.return_temp_c - s.supply_temp_c == pytest.approx(390_000 / (mass_flow * 3900))
    # 60 s at a 60 s time constant: most of the way to facility + approach (25 + 6 K).
    assert 30.0 < s.supply_temp_c < 31.0
