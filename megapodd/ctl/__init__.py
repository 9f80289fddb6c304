"""`megapodctl`: the technician's command line for the local megapodd.

Where things are (each module has one job):

- `main`: the entry point. Parses, runs one command, and turns every failure
  into its exit code and one line (0 done, 1 refused or failed, 2 usage,
  3 megapodd did not answer).
- `parser`: every command and its arguments; start here to add one.
- `daemon`: where the socket is and how one request goes to megapodd.
- `durations`: `--for 15m`, `--since 10m|14:05`, `--timeout 2s`.
- `reads`, `actions`, `config_check`: what each command does: ask megapodd,
  then print a table (`views/`) or JSON.
- `views/`: one module per table, all built to be read at 80 columns
  (cells wrap, no value is ever cut).
- `watch/`: the live view: `model` (the facts a technician looks at, from
  megapodd's answers), `render` (those facts as a frame), `live` (refreshing
  in place on a terminal, plain frames otherwise).
- `completion`: bash completion, with ids from the running daemon.
"""
