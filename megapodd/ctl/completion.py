"""Bash completion. `megapodctl completion bash` prints the script (the
package installs it); the script is generated from the parser, so commands
and options are never out of date, and asks the running daemon for ids with
`megapodctl completion words KIND` (one id a line, nothing if it is away)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

from megapodd.api.client import ApiClientError
from megapodd.ctl.daemon import ask
from megapodd.ctl.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from megapodd.ctl.parser import CommandParser

# How long a completion waits for the daemon: a tab press must not hang.
WORDS_TIMEOUT_S = 2.0

Args = argparse.Namespace


async def _devices(args: Args, kind: str | None = None) -> list[str]:
    answer: Any = await ask(args, "devices", {}, WORDS_TIMEOUT_S)
    return [d["id"] for d in answer if kind is None or d["kind"] == kind]


async def _pdus(args: Args) -> list[str]:
    return await _devices(args, "pdu")


async def _servers(args: Args) -> list[str]:
    return await _devices(args, "bmc")


async def _outputs(args: Args) -> list[str]:
    return sorted(await ask(args, "outputs", {}, WORDS_TIMEOUT_S))


async def _rules(args: Args) -> list[str]:
    answer: Any = await ask(args, "interlocks", {}, WORDS_TIMEOUT_S)
    return sorted({str(i["rule"]) for i in answer.values()})


async def _loops(args: Args) -> list[str]:
    answer: Any = await ask(args, "loops", {}, WORDS_TIMEOUT_S)
    return sorted({str(loop_id).partition("@")[0] for loop_id in answer})


WORD_KINDS: dict[str, Callable[[Args], Awaitable[list[str]]]] = {
    "devices": _devices,
    "pdus": _pdus,
    "servers": _servers,
    "outputs": _outputs,
    "rules": _rules,
    "loops": _loops,
}


async def completion(args: Args, _console: Console) -> int:
    if args.what == "bash":
        print(bash_script(args.root), end="")
        return EXIT_OK
    if args.kind is None:
        raise UsageError(f"completion words needs a kind: {', '.join(sorted(WORD_KINDS))}")
    try:
        words = await WORD_KINDS[args.kind](args)
    except ApiClientError:
        return EXIT_OK  # no daemon, no ids: the shell offers nothing
    print("\n".join(words))
    return EXIT_OK


def _words(words: list[str]) -> str:
    return shlex.quote(" ".join(words))


def bash_script(parser: CommandParser) -> str:
    """The completion script for this parser's commands."""
    commands = parser.commands
    valued = sorted(set(parser.valued_flags).union(*(p.valued_flags for p in commands.values())))
    options_cases = "\n".join(
        f"        {name}) opts={_words(p.flags)} ;;" for name, p in commands.items()
    )
    word_cases = []
    for name, p in commands.items():
        for position, what in enumerate(p.positionals):
            if what == "@file":
                action = 'COMPREPLY=($(compgen -f -- "$cur")); return'
            elif what.startswith("@"):
                action = f"words=$(_megapodctl_ids {what[1:]})"
            elif what:
                action = f"words={shlex.quote(what)}"
            else:
                continue
            word_cases.append(f'        "{name} {position}") {action} ;;')
    return _TEMPLATE.format(
        commands=_words(list(commands)),
        global_opts=_words(parser.flags),
        valued="|".join(valued),
        options_cases=options_cases,
        word_cases="\n".join(word_cases),
    )


_TEMPLATE = r"""# bash completion for megapodctl, written by `megapodctl completion bash`.
# Commands and options are megapodctl's own; device ids, outputs, interlock
# rules and loops come from the running megapodd (nothing when it is away).

_megapodctl_ids() {{
    local socket=()
    if [ -n "$_megapodctl_socket" ]; then socket=(--socket "$_megapodctl_socket"); fi
    "${{COMP_WORDS[0]}}" "${{socket[@]}}" --timeout 2s completion words "$1" 2>/dev/null
}}

_megapodctl() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local i word cmd="" pos=0 opts words=""
    local _megapodctl_socket=""
    # The command is the first word that is not an option; count the
    # positional words after it (an option's value is not one).
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        case "$word" in
            {valued})
                if [ "$word" = --socket ]; then _megapodctl_socket=${{COMP_WORDS[i+1]}}; fi
                ((i++)); continue ;;
            -*) continue ;;
        esac
        if [ -z "$cmd" ]; then cmd=$word; else ((pos++)); fi
    done
    case "$prev" in
        --socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --severity) COMPREPLY=($(compgen -W "info warning alarm critical" -- "$cur")); return ;;
        {valued}) return ;;
    esac
    if [ -z "$cmd" ]; then
        if [[ $cur == -* ]]; then words={global_opts}; else words={commands}; fi
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
        return
    fi
    if [[ $cur == -* ]]; then
        case "$cmd" in
{options_cases}
            *) opts="--help" ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$cmd $pos" in
{word_cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}

complete -F _megapodctl megapodctl
"""
