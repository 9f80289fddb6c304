"""IPMI v2.0 Terminal Mode over serial: framing, codec, SDRs, client, transport, BMC driver."""
