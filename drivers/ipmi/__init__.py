"""IPMI v2.0 Terminal Mode over serial (DEVICES.md §3), in layers that call one way:

- `transport`: the line (a tty through pyserial-asyncio-fast, or socket://host:port).
- `framing`: `[hex]` + line end <-> bytes; `FrameReader` cuts a noisy stream.
- `codec`: `Request` / `Response` (NetFn/LUN, seq, cmd, completion code, data).
- `commands`: data of each command, with the lengths replies must have.
- `sdr`: Full/Compact Sensor Records, the linear conversion, point names.
- `client`: `IpmiClient`, one request in flight per line, seq matching, retries.
- `bmc`: `BmcDriver`, the `DeviceDriver` of kind "bmc".
"""
