"""Failure messages a user can act on without opening the CANFAR portal.

Each message names the session, its image and request, the exit code and a plain
reason. The session's exit code is the in-session Snakemake's, which is 1 for any rule
failure; the rule's own exit code is recovered from Snakemake's "returned non-zero
exit status N" line so that `exit 3` in a rule is reported as exit code 3. What went
wrong (out of memory, an image that cannot be pulled, ...) is canfar_core's diagnosis,
the same one the Prefect integration words its messages from.
"""

from __future__ import annotations

from canfar_core import DiagnosisCategory, Outcome, OutcomeKind, child_exit_code, diagnose_outcome

from snakemake_executor_plugin_canfar.resources import SessionRequest


def command_exit_code(log_text: str) -> int | None:
    """The exit status of the rule's command, from the session Snakemake's last error."""
    return child_exit_code(log_text)


def looks_out_of_memory(outcome: Outcome) -> bool:
    """True when the session (or the rule's command inside it) was killed for memory."""
    found = diagnose_outcome(outcome)
    return found is not None and found.category is DiagnosisCategory.OUT_OF_MEMORY


def _software_hint(outcome: Outcome) -> str | None:
    """A plain reason when the image cannot run Snakemake at all."""
    if "No module named snakemake" in outcome.logs:
        return (
            "Snakemake is not installed for the session's Python; use an image with "
            "Snakemake, or point --canfar-python at an environment on /arc that has it"
        )
    if outcome.exit_code == 127:
        return (
            "a program was not found in the image (exit code 127); check --canfar-python "
            "and that the image provides the rule's tools"
        )
    if outcome.exit_code == 126 and "cannot change directory" in outcome.logs:
        return (
            "the session cannot see the workflow directory; run Snakemake from the shared "
            "filesystem (/arc)"
        )
    return None


def _lower_first(text: str) -> str:
    return (text[:1].lower() + text[1:]).rstrip(".")


def _duration(minutes: float) -> str:
    return f"{minutes:g} min" if minutes >= 1 else f"{minutes * 60:g} s"


def _raise_memory(label: str, request: SessionRequest) -> str:
    suggestion = request.ram * 2 * 1000
    return (
        f"raise mem_mb for {label}, e.g. mem_mb=lambda wildcards, attempt: "
        f"{suggestion} * attempt with --retries 1"
    )


def describe_request(request: SessionRequest) -> str:
    """`4 cores, 3 GiB` (plus GPUs when requested)."""
    text = f"{request.cores} core{'' if request.cores == 1 else 's'}, {request.ram} GiB"
    if request.gpus:
        text += f", {request.gpus} GPU{'' if request.gpus == 1 else 's'}"
    return text


def failure_message(
    outcome: Outcome,
    *,
    label: str,
    request: SessionRequest,
    pending_timeout: float | None,
) -> str:
    """The message for `report_job_error` (ends with a separator, see below)."""
    image = outcome.image or request.image
    head = f"CANFAR session {outcome.session_id} (image {image}; {describe_request(request)})"
    code = outcome.exit_code
    code_text = "unknown" if code is None else str(code)
    kind = outcome.kind

    if kind is OutcomeKind.PENDING_TIMEOUT:
        events = outcome.events_table or (
            "(none: the session was never scheduled; the platform is busy or the request "
            "does not fit any node)"
        )
        waited = f"{pending_timeout:g} s" if pending_timeout else "too long"
        body = (
            f"was still Pending after {waited} and was deleted "
            f"(--canfar-pending-timeout). Session events:\n{events}\n"
        )
        return f"{head} {body}"
    if kind is OutcomeKind.IMAGE_PULL_FAILED:
        body = (
            f"could not pull its image and was deleted ({outcome.reason}); check the image's "
            "name and tag. Session events:\n"
            f"{outcome.events_table or '(none)'}\n"
        )
        return f"{head} {body}"
    if kind is OutcomeKind.RUNTIME_EXCEEDED or (code == 124 and request.runtime_minutes):
        limit = _duration(request.runtime_minutes) if request.runtime_minutes else "its limit"
        body = (
            f"exceeded its runtime of {limit} and was stopped (exit code {code_text}); "
            f"raise the runtime resource of {label}"
        )
    elif looks_out_of_memory(outcome):
        body = (
            f"was killed, most likely out of memory (exit code {code_text}, "
            f"ram={request.ram} GiB); {_raise_memory(label, request)}"
        )
    elif (found := diagnose_outcome(outcome)) is not None and found.category in (
        DiagnosisCategory.ENVELOPE_NEVER_RAN,
        DiagnosisCategory.STUCK,
    ):
        body = f"{found.summary} ({outcome.reason}); {_lower_first(found.resolution)}"
    elif kind is OutcomeKind.FAILED and code is None:
        body = (
            f"was killed without recording an exit code, most likely out of memory "
            f"(ram={request.ram} GiB; {_raise_memory(label, request)}), else by the "
            "platform's deadline or because its command could not start"
        )
    elif kind is OutcomeKind.DELETED:
        body = f"was deleted before it finished (exit code {code_text})"
    elif kind is OutcomeKind.VANISHED:
        body = f"failed (exit code {code_text}): {outcome.reason}"
    else:
        rule_code = command_exit_code(outcome.logs)
        if rule_code is not None and code not in (None, 0):
            body = (
                f"failed: the rule's command exited with code {rule_code} "
                f"(the session's Snakemake exited with code {code_text})"
            )
        else:
            reason = _software_hint(outcome) or outcome.reason or "the command failed"
            body = f"failed with exit code {code_text}: {reason}"
    # Snakemake appends its own sentence to the message without a separator.
    return f"{head} {body}. "
