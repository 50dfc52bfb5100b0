"""How a headless session's ``cmd``/``args``/``env`` become an argv and an environment.

The real server splits ``args`` with Java's ``String.split(" ")`` and the kubelet then
expands ``$(VAR)`` references; no shell is ever involved.  Reproducing both exactly is what
makes a job that works here work on CANFAR (and fail here the way it would fail there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def java_split(value: str, separator: str) -> list[str]:
    """``String.split`` with a literal one-character separator, Java semantics.

    Empty elements are kept, trailing empty elements are dropped, and a string without
    the separator (including ``""``) gives a one-element list.
    """
    if separator not in value:
        return [value]
    parts = value.split(separator)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def k8s_expand(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` like the kubelet does for command, args and env values.

    ``$$`` becomes ``$``; a reference to an unknown variable, an unterminated ``$(`` and a
    ``$`` followed by anything else are left as written.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(variables.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def container_env(
    user_env: Sequence[tuple[str, str]], injected: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The container's env list in order, each value expanded against earlier entries.

    Kubernetes resolves ``$(VAR)`` in an env value only from variables defined before it,
    and a later duplicate overrides an earlier one, so the injected platform variables win.
    """
    defined: dict[str, str] = {}
    result: list[tuple[str, str]] = []
    for key, value in [*user_env, *injected]:
        expanded = k8s_expand(value, defined)
        defined[key] = expanded
        result.append((key, expanded))
    return result


def effective_env(entries: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Collapse an env list into a mapping, later entries overriding earlier ones."""
    return dict(entries)


def build_argv(
    cmd: str | None,
    args: Sequence[str] | None,
    env: Mapping[str, str],
    default_entrypoint: Sequence[str],
) -> list[str]:
    """The process argv: ``[cmd] + args`` with ``$(VAR)`` expanded.

    ``cmd`` replaces the image ENTRYPOINT and ``args`` its CMD.  Without an image to supply
    either, ``args`` alone is used as the argv, and with neither the configured default
    entrypoint runs.
    """
    argv: list[str] = []
    if cmd is not None:
        argv.append(cmd)
    if args:
        argv.extend(args)
    if not argv:
        return list(default_entrypoint)
    return [k8s_expand(part, env) for part in argv]
