"""Writes docs/cli.md from a real run: a simulated pod (megapod-sim), a
mosquitto and a megapodd of its own, then every example in the guide run
with the installed megapodctl at 80 columns and its output pasted in as it
came. Nothing in the examples is written by hand.

    .venv/bin/python scripts/cli_docs.py [--output docs/cli.md]

Run it as root to include the examples of another user (setpriv as nobody).
Takes about a minute; ports come from the kernel, state goes to a temporary
directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WIDTH = 80


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, ready: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"cli_docs: {what} did not happen in {timeout_s:g} s")
        time.sleep(0.2)


class Pod:
    """mosquitto, megapod-sim and megapodd as processes, as scripts/demo runs them."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.socket = state / "megapodd.sock"
        self._procs: list[subprocess.Popen[bytes]] = []

    def _start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.state / log).open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self._procs.append(proc)
        return proc

    @contextlib.contextmanager
    def running(self) -> Iterator[Pod]:
        mqtt_port = _free_port()
        conf = self.state / "mosquitto.conf"
        conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\n")
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        try:
            self._start([mosquitto, "-c", str(conf)], "mosquitto.log")
            config = self.state / "pod.toml"
            self._start(
                [str(BIN / "megapod-sim"), "run", "--profile", "small", "--state-dir",
                 str(self.state), "--base-port", str(_free_port()), "--write-config",
                 str(config), "--mqtt-url", f"mqtt://127.0.0.1:{mqtt_port}",
                 "--pod-id", "pod-docs"],
                "sim.log",
            )  # fmt: skip
            _wait("megapod-sim writing its config", config.exists)
            # nogroup stands in for the megapod group: nobody may read.
            text = config.read_text().replace(
                f'socket = "{self.socket}"', f'socket = "{self.socket}"\nreader_group = "nogroup"'
            )
            config.write_text(text)
            self._start([str(BIN / "megapodd"), "--config", str(config)], "megapodd.log")
            _wait("every device online", self._all_online)
            yield self
        finally:
            for proc in reversed(self._procs):
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _all_online(self) -> bool:
        answer = self.ask("status", "--json")
        return answer is not None and all(d["state"] == "online" for d in answer["devices"])

    def ask(self, *args: str) -> Any:
        """megapodctl's JSON answer, or None if it has none (yet)."""
        done = subprocess.run(
            [str(BIN / "megapodctl"), "--socket", str(self.socket), *args],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        return json.loads(done.stdout) if done.returncode == 0 else None

    def state_of(self, interlock: str) -> str:
        answer = self.ask("interlocks", "--json")
        return str(answer[interlock]["state"]) if answer else ""


class Recorder:
    """Runs commands as a technician's shell would and shows them as run."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self.env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
        self.env |= {
            "COLUMNS": str(WIDTH),
            "NO_COLOR": "1",
            "TERM": "dumb",
            "MEGAPODD_SOCKET": str(pod.socket),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            # megapod-sim finds the pod in $TMPDIR/megapod-sim-UID without --state-dir.
            "TMPDIR": str(pod.state.parent),
        }

    def _run(self, argv: list[str]) -> tuple[int, str]:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, check=False, env=self.env,
            cwd=self.pod.state,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    def _shown(self, line: str, code: int, out: str, max_lines: int | None) -> str:
        lines = [line.rstrip() for line in out.rstrip("\n").splitlines()]
        if max_lines is not None and len(lines) > max_lines:
            lines = [*lines[:max_lines], f"[… {len(lines) - max_lines} more lines]"]
        if code:
            lines.append(f"[exit {code}]")
        return "\n".join([f"$ {line}", *lines])

    def ctl(self, *args: str, max_lines: int | None = None, user: str | None = None) -> str:
        """`megapodctl ARGS` (as `user`, "uid:gid", if given) and what it printed."""
        argv = [str(BIN / "megapodctl"), *args]
        line = shlex.join(["megapodctl", *args])
        if user is not None:
            uid, gid = user.split(":")
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
            line = f"setpriv --reuid={uid} --regid={gid} --clear-groups {line}"
        code, out = self._run(argv)
        return self._shown(line, code, out, max_lines)

    def sim(self, *args: str) -> str:
        code, out = self._run([str(BIN / "megapod-sim"), *args])
        return self._shown(shlex.join(["megapod-sim", *args]), code, out, None)

    def follow(self, trigger: Callable[[], str]) -> tuple[str, str]:
        """`events --follow` while `trigger` runs, then Ctrl-C."""
        argv = [str(BIN / "megapodctl"), "events", "--follow", "-n", "2"]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, text=True
        )
        time.sleep(1.5)
        other = trigger()
        time.sleep(2.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        followed = self._shown("megapodctl events --follow -n 2", proc.returncode, out, None)
        return f"{followed}\n^C", other


def _outlet(pod: Pod, pdu: str, n: int) -> object:
    answer = pod.ask("points", pdu, "--match", f"outlet_{n:02d}_state", "--json")
    return answer[0]["value"] if answer else None


def block(*parts: str) -> str:
    return "```\n" + "\n".join(parts) + "\n```"


def write(rec: Recorder, as_root: bool) -> str:
    pod = rec.pod
    s: list[str] = []
    add = s.append
    add(HEADER)

    add("## Reading\n\n### status\n\n" + STATUS)
    add(block(rec.ctl("status")))
    add("With a device: every point, its quality and age, and the link's counters.\n\n")
    add(block(rec.ctl("status", "r1s01")))

    add("### devices\n\n" + DEVICES)
    add(block(rec.ctl("devices")))

    add("### points\n\n" + POINTS)
    add(block(rec.ctl("points", "r1s01", "--match", "gpu*")))
    add(block(rec.ctl("points", "--match", "r2*.inlet_temp_c")))
    add(block(rec.ctl("points", "cdu1", "--match", "*pressure*", "--json")))

    add("### loops\n\n" + LOOPS)
    add(block(rec.ctl("loops")))

    add("### outputs\n\n" + OUTPUTS)
    add(block(rec.ctl("outputs")))

    add("### power\n\n" + POWER)
    add(block(rec.ctl("power", max_lines=24)))

    add("### interlocks\n\n" + INTERLOCKS)
    add(block(rec.ctl("interlocks", max_lines=30)))

    add("### events\n\n" + EVENTS)
    add(block(rec.ctl("events", "-n", "4")))
    add(
        "`--follow` prints what came, then every new event as it comes (one JSON object\n"
        "a line with `--json`), until Ctrl-C (exit 0):\n\n"
    )
    followed, meanwhile = rec.follow(lambda: rec.ctl("outlet", "pdu-r2a", "7", "off"))
    add(block(followed))
    add("while, in another shell:\n")
    add(block(meanwhile))
    add(block(rec.ctl("events", "--since", "10m", "--severity", "warning")))

    add("### watch\n\n" + WATCH)
    add(block(rec.ctl("watch", "--count", "1")))

    add("## Acting (admin)\n\n" + ACTING)
    add("### outlet\n\n" + OUTLET)
    add(block(rec.ctl("outlet", "pdu-r2a", "7", "on"), rec.ctl("outlet", "pdu-r2a", "8", "reboot"),
              rec.ctl("outlet", "pdu-r2a", "30", "off")))  # fmt: skip

    add("### server\n\n" + SERVER)
    add(block(rec.ctl("server", "r2s04", "soft"), rec.ctl("server", "r2s04", "on"),
              rec.ctl("server", "r2s04", "cycle", "--json")))  # fmt: skip

    add("### override and release\n\n" + OVERRIDE)
    add(block(rec.ctl("override", "cdu1.pump_speed_pct", "80", "--for", "10m"),
              rec.ctl("outputs"),
              rec.ctl("release", "cdu1.pump_speed_pct"),
              rec.ctl("override", "cdu1.pump_speed_pct", "10"),
              rec.ctl("override", "cdu1.pump_speed_pct", "80", "--for", "9h"),
              rec.ctl("release", "cdu1.pump_speed_pct")))  # fmt: skip

    add("### power budget\n\n" + POWER_BUDGET)
    add(block(rec.ctl("power", "budget", "60000"),
              rec.ctl("power", "budget", "90000"),
              rec.ctl("power", "budget", "81600", "--json")))  # fmt: skip

    add("### loop … setpoint\n\n" + SETPOINT)
    add(block(rec.ctl("loop", "supply-temp", "setpoint", "31"),
              rec.ctl("loop", "supply-temp", "setpoint", "45"),
              rec.ctl("loop", "supply-temp", "setpoint", "30", "--json")))  # fmt: skip

    add("### A leak: watch, interlocks, reset, rack\n\n" + LEAK)
    injected = rec.sim("inject", "leak", "r1")
    _wait("leak-tray-r1 tripping", lambda: pod.state_of("leak-tray-r1") == "tripped")
    # Outlet states come with the PDU's slow poll: wait for the live view to have them.
    _wait("rack 1's outlets off", lambda: _outlet(pod, "pdu-r1a", 4) == "off")
    add(block(injected, rec.ctl("watch", "--count", "1")))
    add(block(rec.ctl("interlocks"), rec.ctl("reset", "leak-tray-r1")))
    cleared = rec.sim("inject", "--clear", "leak", "r1")
    _wait("leak-tray-r1 latching", lambda: pod.state_of("leak-tray-r1") == "latched")
    add(LEAK_CLEARED)
    add(block(cleared, rec.ctl("reset", "leak-tray-r1"), rec.ctl("rack", "1", "open"),
              *(rec.ctl("outlet", "pdu-r1a", str(n), "on") for n in range(1, 5))))  # fmt: skip

    add("## Other tools\n\n### config check\n\n" + CONFIG)
    bad = pod.state / "bad.toml"
    bad.write_text('[pod]\nid = "Pod 7"\n\n[[cdu]]\nid = "cdu1"\nurl = "modbus://cdu1"\npoll = 1\n')
    add(block(rec.ctl("config", "check", "pod.toml"), rec.ctl("config", "check", "bad.toml")))

    add("### version\n\n" + VERSION)
    add(block(rec.ctl("version"), rec.ctl("version", "--json")))

    add("### completion\n\n" + COMPLETION)
    add(block(rec.ctl("completion", "words", "servers")))

    add("## When it fails\n\n" + FAILS)
    add(block(rec.ctl("--socket", "/run/megapodd/other.sock", "status"),
              rec.ctl("status", "cdu9"),
              rec.ctl("reset", "leak-r1"),
              rec.ctl("override", "cdu1.pump_speed_pct", "80", "--for", "15x"),
              rec.ctl("override", "pump_speed_pct", "80")))  # fmt: skip
    if as_root:
        add(ROLES)
        add(block(rec.ctl("status", user="nobody:nogroup", max_lines=4),
                  rec.ctl("outlet", "pdu-r1a", "3", "off", user="nobody:nogroup"),
                  rec.ctl("status", user="nobody:daemon")))  # fmt: skip
    # Parts one blank line apart: Markdown needs it around blocks and headings.
    return "\n".join(part.strip("\n") + "\n" for part in s)


HEADER = """# megapodctl: the technician's command line

`megapodctl` talks to the local megapodd over its Unix socket. Every example
below is real: `scripts/cli_docs.py` ran it against the simulated pod
(`megapod-sim`, 2 racks of 4 servers, pod id `pod-docs`) at 80 columns and
pasted the output as it came. `[exit N]` marks a command that did not exit 0.

```
megapodctl [--socket PATH] [--timeout DURATION] COMMAND …
```

- **Socket**: `--socket`, else `$MEGAPODD_SOCKET`, else `/run/megapodd/megapodd.sock`.
- **Timeout**: how long to wait for megapodd's answer: 10 s, 30 s for
  `outlet`, `server`, `override` and `rack` (they wait for the device).
- **Tables** are for people and fit 80 columns: a long cell wraps, nothing is
  ever cut. **`--json`** on every read and every action gives megapodd's
  answer as it came, for scripts (`watch --json` and `events --follow --json`:
  one object a line).
- **Roles**: members of `megapod` may read, members of `megapod-admin` (and
  root) may act ([operations.md](operations.md#who-may-do-what-the-local-socket)).
  Every action, done or refused, is an event with the caller's uid.

| exit | meaning |
|---|---|
| 0 | done (an action: megapodd says it ran) |
| 1 | refused or failed: megapodd said why (role, unknown id, out of range, the device refused); no permission to open the socket; `config check` found problems |
| 2 | usage: the command line is wrong (unknown command, malformed duration) |
| 3 | megapodd did not answer: not running, hung past the timeout, closed the connection. For an action the line says whether it was sent (`whether it ran is unknown`: check `megapodctl events`) |

Each failure is one line on stderr saying what is wrong and what to try.
Scripts may also speak the socket themselves: one JSON line
`{"cmd": …, "args": {…}}` per request (`megapodd/api/client.py`; each
command's arguments in `megapodd/commands/requests.py`).

| command | role | what |
|---|---|---|
| `status [DEVICE]` | reader | the pod, each device's state and key readings; one device's every point |
| `watch` | reader | the live view: alarms and interlocks first, racks, CDU, loops, power, events |
| `devices` | reader | every device: rack, cabling, state, link errors |
| `points [DEVICE] [--match GLOB]` | reader | readings, filtered by device and name |
| `events [-n N] [--since DURATION\\|TIME] [--severity S] [--follow]` | reader | what happened |
| `interlocks [--all]` | reader | the safety rules, with the instances that are tripped or latched |
| `loops` | reader | the control loops: mode, input, output, terms |
| `outputs [--all]` | reader | who holds each actuator, and every claim |
| `power` | reader | the power budget, headroom, each phase's load, every cap and why |
| `outlet PDU N on\\|off\\|reboot` | admin | switch a PDU outlet |
| `server ID on\\|off\\|cycle\\|reset\\|soft` | admin | a server's chassis power |
| `override OUTPUT VALUE [--for DURATION]` | admin | hold an output for a while (15 min, at most 8 h) |
| `release OUTPUT` | admin | end an override early |
| `power budget W` | admin | the pod's power budget until restart, within its configured bounds |
| `loop ID setpoint VALUE` | admin | a loop's setpoint, within its configured limits |
| `rack N open\\|isolate` | admin | a rack's coolant supply |
| `reset RULE` | admin | reset a latched interlock once its cause is gone |
| `config check FILE [--explain]` | anyone | the checks of `megapodd --check-config` |
| `version` | anyone | megapodctl's and the running megapodd's versions |
| `completion bash` | anyone | the bash completion script (the package installs it) |

"""
STATUS = """One row per device: kind, state (and why, when not online), the readings a
technician looks at first, and how many of its points are not good.
"""
DEVICES = """Every device with its rack and, for a server, the PDU outlet that feeds it;
its state, how many points it has, and the link's error counters.
"""
POINTS = """Readings of one device or all. `--match` is a shell pattern on the point's
name (`gpu*_temp_c`), or on `DEVICE.POINT` when it has a dot (`r2*.inlet_temp_c`).
"""
LOOPS = """Each control loop: mode (`auto`, `failsafe` in red, `held`, `overridden`),
its input and setpoint, the output it drives and who owns that output, and the
PID terms. Loops run per server (`fan-zone@r1s01`, …) fold into one row while
all of them are in `auto`.
"""
OUTPUTS = """The outputs someone claims, in rank order of the claims (interlock, override,
fleet, loop, default): the value that wins, the value last confirmed on the
device, and every claim with who made it and the time it has left. `--all`
lists the unclaimed ones too (the device keeps its own setting).
"""
POWER = """The power budget (`[power]`, [power.md](power.md)): the pod's measured power
against its budget and the headroom left, each PDU phase's current against its
limit (`phase_limit_pct` of the breaker; `stale` in red: its servers are capped
to their share), and every capped server with who caps it and why (`loop`: the
budget; `interlock`, `override`, `fleet`: a higher owner, which wins).
"""
INTERLOCKS = """One row per rule: what it watches and what it does, stage by stage; a rule
per server or per phase is one row (`gpu-hot ×8`) with the instances that are
not normal on rows of their own (`--all`: every instance). `tripped` (red):
the condition holds; `latched` (yellow): it cleared, the outputs are still
held until `megapodctl reset`. `--json` is the object the MQTT `interlocks`
topic carries.
"""
EVENTS = """The newest events from megapodd's memory (the last 500): `-n N` (20),
`--since 10m` / `2h` / `14:05` (local time; today, or yesterday if that is
still to come) / `'2025-06-01 14:05'`, `--severity warning` (that and worse:
info < warning < alarm < critical).
"""
WATCH = """The live view. On a terminal it refreshes in place (every `--interval`, 1 s)
until `q` or Ctrl-C, and gives the terminal back as it was. On top: the pod,
MQTT, how many devices are online; then alarms, tripped (red) and latched
interlocks first; per rack the hottest GPU, the warmest inlet and outlet air,
the rack's power at its PDUs, servers on and outlets that feed a server but
are off (or a PDU phase near overload); the CDU (supply and return, flow, Δp,
pumps, valve, reservoir, leak zones); the loops' modes; the pod's power
against its budget (a slot until megapodd has a budget); and the newest
events in whatever height is left. If megapodd stops answering, the last
frame stays up with a red line saying so. Not on a terminal (a pipe, a log)
it prints one plain frame per interval; `--count N` stops after N.
"""
ACTING = """Each action prints one line saying what megapodd did, or its answer with
`--json`. Every one, done or refused, is an event (`command`,
`command_rejected`, `command_failed`) with the caller's uid, pid and role.
"""
OUTLET = """Waits (up to 10 s) until the PDU reports the outlet in the wanted state;
`reboot` waits for "on" and is sent once, never resent.
"""
SERVER = """Chassis power over IPMI: `on`/`off` are confirmed by reading the power state
back; `cycle`, `reset` and `soft` (ACPI soft shutdown) by the BMC accepting
them, sent once.
"""
OVERRIDE = """An output as `outputs` names it: `DEVICE.OUTPUT`. A number, or a state for
a discrete output (`cdu1.lead_pump pump2`, `cdu1.rack_1_isolation closed`).
`--for` 90s, 15m, 2h (15 min if not given, at most 8 h); it always expires.
`release` ends your override early (or, if there is none, the fleet's). The
older forms `override DEVICE OUTPUT VALUE` and `release DEVICE OUTPUT` are
still taken.
"""
POWER_BUDGET = """A new budget until megapodd restarts, between the sum of the servers'
`min_cap_w` and `[power] max_budget_w`; outside, it is refused with both bounds.
Audited like every action (`command` event); the fleet's `cmd/power_budget`
does the same.
"""
SETPOINT = """Within the loop's `setpoint_min`/`setpoint_max` from the config; a loop run
per device (`fan-zone`) changes on every device.
"""
LEAK = """A leak in rack 1's drip tray, injected at the simulator: the live view shows
the tripped interlock first, the leak zone and the rack's outlets it switched
off; a reset is refused while the tray is wet. (A reset is refused too when
the rule is not tripped, for an unknown id, and unless a good reading newer
than the rule's `stale_after_s` shows the cause is gone.)
"""
LEAK_CLEARED = """The tray dry, the rule is latched: a reset releases its outputs, but
nothing comes back by itself: someone who has looked at the rack opens its
coolant and switches its outlets on.
"""
CONFIG = """The checks of `megapodd --check-config FILE` (the same code): exit 0 and
`FILE: OK`, or exit 1 and every problem. `--explain` prints every safety rule
as it would run on this pod; `--json` gives `file`, `valid`, `problems`.
"""
VERSION = """megapodctl's version, then the running daemon's (or why it cannot be asked:
still exit 0).
"""
COMPLETION = """`megapodctl completion bash` prints the bash completion script; the package
installs it as `/usr/share/bash-completion/completions/megapodctl`. From a
checkout: `source <(megapodctl completion bash)`. Commands and options come
from megapodctl itself; device ids, PDUs, servers, outputs, interlock rules
and loops from the running megapodd (`completion words KIND`, what the script
asks at a tab press; nothing if megapodd is away):
"""
FAILS = """A wrong socket, an unknown id, a malformed duration, a wrong output name:
"""
ROLES = """As a member of the reader group (here `nogroup` stands in for `megapod`):
reads work, actions are refused (and audited). As anyone else the socket's
mode keeps them out:
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "cli.md")
    args = parser.parse_args()
    as_root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="megapod-cli-docs-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - nobody's examples reach the socket
        state = Path(tmp) / f"megapod-sim-{os.getuid()}"  # megapod-sim's default place
        state.mkdir()
        os.chmod(state, 0o755)  # noqa: S103
        with Pod(state).running() as pod:
            text = write(Recorder(pod), as_root)
    args.output.write_text(text)
    print(f"cli_docs: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
