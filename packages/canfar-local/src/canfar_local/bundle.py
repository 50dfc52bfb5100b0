"""Reproduce how the real server turns ``image``/``cmd``/``args``/``env`` into a container.

Skaha (``PostAction.getHeadlessImageBundle``) concatenates the values, unescaped, into a YAML
fragment; ``SessionJobBuilder`` splices that fragment into ``launch-headless.yaml`` with
``String.replaceAll`` (so ``\\`` and ``$`` in the values are *regex replacement syntax*), and
the result is parsed as YAML.  Rather than guess which inputs survive, this module runs the
same three steps: build the fragment, apply Java's replacement-string rules, parse the YAML.
A value that would break the real server breaks here with the same kind of error, and a value
that the real server would silently change (``\\t``, ``", "``) is changed the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from .argv import java_split
from .errors import BadRequest, UnexpectedError

PLACEHOLDER = "${headless.image.bundle}"

# Java exception class names for the PyYAML error classes (SnakeYAML shares PyYAML's design).
_SNAKEYAML_NAMES = {
    "ScannerError": "org.yaml.snakeyaml.scanner.ScannerException",
    "ParserError": "org.yaml.snakeyaml.parser.ParserException",
    "ComposerError": "org.yaml.snakeyaml.composer.ComposerException",
    "ReaderError": "org.yaml.snakeyaml.reader.ReaderException",
}


@dataclass(frozen=True)
class ContainerSpec:
    """What Kubernetes would run: the parsed image, command, args and user env."""

    image: str
    command: list[str] | None
    args: list[str] | None
    env: list[tuple[str, str]]


def headless_bundle(image: str, cmd: str | None, args: str | None, envs: Sequence[str]) -> str:
    """The YAML fragment exactly as ``getHeadlessImageBundle`` concatenates it."""
    parts = [f'image: "{image}"']
    if cmd is not None:
        parts.append(f'\n        command: ["{cmd}"]')
    if args is not None:
        arg_list = java_split(args, " ")
        if arg_list:
            parts.append("\n        args: [" + ", ".join(f'"{a}"' for a in arg_list) + "]")
    parts.append("\n        env:")
    for entry in envs:
        key_value = java_split(entry, "=")
        if len(key_value) == 2:
            parts.append(f"\n        - name: {key_value[0]}")
            parts.append(f'\n          value: "{key_value[1]}"')
    return "".join(parts)


def java_replacement(replacement: str, matched: str = PLACEHOLDER) -> str:
    """Expand ``replacement`` as ``Matcher.appendReplacement`` does for a group-less pattern.

    ``\\x`` gives ``x``; ``$0`` gives the matched text; any other ``$`` use is an error,
    raised as the exception type Java throws (IllegalArgumentException -> 400,
    IndexOutOfBoundsException -> 500).
    """
    out: list[str] = []
    i = 0
    n = len(replacement)
    while i < n:
        ch = replacement[i]
        if ch == "\\":
            i += 1
            if i == n:
                raise BadRequest("character to be escaped is missing")
            out.append(replacement[i])
            i += 1
        elif ch == "$":
            i += 1
            if i == n:
                raise BadRequest("Illegal group reference: group index is missing")
            ch = replacement[i]
            if ch == "{":
                i += 1
                start = i
                while i < n and replacement[i].isascii() and replacement[i].isalnum():
                    i += 1
                name = replacement[start:i]
                if not name:
                    raise BadRequest("named capturing group has 0 length name")
                if i >= n or replacement[i] != "}":
                    raise BadRequest("named capturing group is missing trailing '}'")
                if name[0].isdigit():
                    raise BadRequest(f"capturing group name {{{name}}} starts with digit character")
                raise BadRequest(f"No group with name {{{name}}}")
            if not ("0" <= ch <= "9"):
                raise BadRequest("Illegal group reference")
            group = ord(ch) - ord("0")
            i += 1
            # Java extends the number only while it stays a valid group (0 here).
            while i < n and "0" <= replacement[i] <= "9" and group * 10 + int(replacement[i]) == 0:
                i += 1
            if group != 0:
                raise UnexpectedError(f"java.lang.IndexOutOfBoundsException: No group {group}")
            out.append(matched)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _document(bundle: str, injected: Sequence[tuple[str, str]], workdir: str) -> str:
    """The container part of ``launch-headless.yaml`` with the bundle spliced in.

    The indentation matches the real template, because the bundle's own line breaks carry
    eight spaces and a value containing a newline must land where it would on the server.
    """
    lines = [
        "spec:",
        "  template:",
        "    spec:",
        "      containers:",
        '      - name: "session"',
        "        # image and start of the 'env' label comes from the image bundle",
        f"        {bundle}",
    ]
    for key, value in injected:
        lines.append(f"        - name: {key}")
        lines.append(f'          value: "{value}"')
    lines.append(f'        workingDir: "{workdir}"')
    return "\n".join(lines) + "\n"


def _scalar(node: yaml.Node | None) -> str | None:
    """A scalar's text as a Java bean would bind it to a String field (null stays null)."""
    if not isinstance(node, yaml.ScalarNode):
        return None
    if node.style is None and node.value in ("", "~", "null", "Null", "NULL"):
        return None
    return str(node.value)


def _mapping(node: yaml.Node) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    result: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = _scalar(key)
        if name is not None:
            result[name] = value
    return result


def _string_list(node: yaml.Node | None, field: str, job: str) -> list[str] | None:
    if node is None or (isinstance(node, yaml.ScalarNode) and _scalar(node) is None):
        return None
    if not isinstance(node, yaml.SequenceNode):
        raise UnexpectedError(_kubectl_error(job, f"spec.template.spec.containers[0].{field}"))
    items = []
    for item in node.value:
        text = _scalar(item)
        if text is None:
            text = ""
        items.append(text)
    return items


def _kubectl_error(job: str, detail: str) -> str:
    return (
        "java.io.IOException: Error executing command: [kubectl, create, -f, /tmp/job.yaml] "
        f'Error: The Job "{job}" is invalid: {detail}: Invalid value'
    )


def parse_container(
    image: str,
    cmd: str | None,
    args: str | None,
    envs: Sequence[str],
    job_name: str,
    *,
    java_regex: bool = True,
) -> ContainerSpec:
    """Run the server's bundle pipeline and return what the container would receive.

    Raises :class:`BadRequest` or :class:`UnexpectedError` exactly where the real server's
    regex replacement, YAML parse or ``kubectl create`` would fail.
    """
    bundle = headless_bundle(image, cmd, args, envs)
    if java_regex:
        bundle = java_replacement(bundle)
    document = _document(bundle, [("skaha_hostname", "h")], "/w")
    try:
        root = yaml.compose(document, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        name = _SNAKEYAML_NAMES.get(type(exc).__name__, "org.yaml.snakeyaml.error.YAMLException")
        detail = str(exc).replace('"<unicode string>"', "'reader'")
        raise UnexpectedError(f"{name}: {detail}") from None
    containers: yaml.Node | None = root
    for key in ("spec", "template", "spec", "containers"):
        containers = _mapping(containers).get(key) if containers is not None else None
    if not isinstance(containers, yaml.SequenceNode) or not containers.value:
        raise UnexpectedError(_kubectl_error(job_name, "spec.template.spec.containers"))
    container = _mapping(containers.value[0])
    parsed_image = _scalar(container.get("image"))
    if not parsed_image:
        raise UnexpectedError(_kubectl_error(job_name, "spec.template.spec.containers[0].image"))
    command = _string_list(container.get("command"), "command", job_name)
    arg_list = _string_list(container.get("args"), "args", job_name)
    env: list[tuple[str, str]] = []
    env_node = container.get("env")
    if isinstance(env_node, yaml.SequenceNode):
        # The last entry is the platform's skaha_hostname sentinel, not the user's.
        for index, item in enumerate(env_node.value[:-1]):
            fields = _mapping(item)
            name = _scalar(fields.get("name"))
            if not name:
                raise UnexpectedError(
                    _kubectl_error(job_name, f"spec.template.spec.containers[0].env[{index}].name")
                )
            env.append((name, _scalar(fields.get("value")) or ""))
    return ContainerSpec(image=parsed_image, command=command, args=arg_list, env=env)
