"""``metabuilder completion bash|zsh``: shell completion scripts made from the argparse parser,
so they always offer the commands and options the CLI has."""

from __future__ import annotations

import argparse
import shlex


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps sub-commands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(parser: argparse.ArgumentParser) -> list[str]:
    """What may follow a command: its options, and the choices of its positional arguments."""
    words: list[str] = []
    for action in parser._actions:
        if action.option_strings:
            words += [o for o in action.option_strings if o.startswith("--")] or action.option_strings
        elif action.choices and not isinstance(action, argparse._SubParsersAction):
            words += [str(c) for c in action.choices]
    return words


def bash(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    commands = _subparsers(parser)
    cases = "\n".join(f"        {shlex.quote(name)}) words={shlex.quote(' '.join(_words(sub)))} ;;"
                      for name, sub in sorted(commands.items()))
    top = " ".join(sorted(commands) + _words(parser))
    func = f"_{prog.replace('-', '_')}_complete"
    return f"""# bash completion for {prog}; load with: eval "$({prog} completion bash)"
{func}() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} words
    if [ "$COMP_CWORD" -eq 1 ]; then
        words={shlex.quote(top)}
    else
        case "${{COMP_WORDS[1]}}" in
{cases}
        *) words="" ;;
        esac
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if [ ${{#COMPREPLY[@]}} -eq 0 ]; then COMPREPLY=($(compgen -f -- "$cur")); fi
}}
complete -o filenames -F {func} {prog}
"""


def zsh(parser: argparse.ArgumentParser) -> str:
    return f"""#compdef {parser.prog}
# zsh completion for {parser.prog}; load with: eval "$({parser.prog} completion zsh)"
autoload -U +X bashcompinit && bashcompinit
{bash(parser)}"""


def add_parser(sub: argparse._SubParsersAction, root: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(fn=lambda args, settings: _print(root, args.shell))


def _print(root: argparse.ArgumentParser, shell: str) -> int:
    print(bash(root) if shell == "bash" else zsh(root), end="")
    return 0
