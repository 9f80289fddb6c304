"""Commands: what megapodctl (Unix socket) and the fleet (MQTT) can ask.

One model for both transports: typed requests (`requests`), roles and
callers (`caller`), the dispatch that checks and runs them (`dispatch`), the
audit trail (`audit`) and what each command does (`service`). `api/` and
`mqtt/` only carry bytes to and from here.
"""
