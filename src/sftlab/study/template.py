"""The study template: how an (instruction, response) pair becomes training text.

A template is a plain string with exactly one ``{instruction}`` and one
``{response}`` placeholder, ``{response}`` last (the reference study used
``"###Question: {instruction}\\n\\n###Answer: {response}"``). The text before
``{response}`` is the prompt (masked out of the loss); the response is the
completion. Literal braces are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import string

PLACEHOLDERS = ("instruction", "response")


def template_problems(template: str) -> list[str]:
    """Every problem with ``template``, as messages (empty when it is fine)."""
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template)
                  if f is not None]
    except ValueError as err:
        return [f"cannot parse template: {err} (write literal braces as '{{{{' and '}}}}')"]
    fields = [f for f, _, _ in parsed]
    problems = [f"'{{{f}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}': only plain "
                f"placeholders like '{{{f}}}' are allowed (no format spec or conversion)"
                for f, spec, conv in parsed if spec or conv]
    if problems:
        return problems
    for name in PLACEHOLDERS:
        if fields.count(name) != 1:
            problems.append(f"must contain '{{{name}}}' exactly once (found {fields.count(name)})")
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        problems.append(
            f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
            "only {instruction} and {response} are allowed"
        )
    if not problems and fields[-1] != "response":
        problems.append("'{response}' must come after '{instruction}'")
    if not problems and not template.rstrip().endswith("{response}"):
        problems.append("'{response}' must be the last thing in the template")
    return problems


def split_template(template: str) -> tuple[str, str]:
    """Split at ``{response}``: (prompt part with ``{instruction}``, suffix after it)."""
    marker = "{response}"
    head, _, tail = template.partition(marker)
    return head, tail


def render_prompt(template: str, instruction: str) -> str:
    """The prompt: the template filled up to (not including) the response."""
    head, _ = split_template(template)
    return head.format(instruction=instruction)


def render_example(template: str, instruction: str, response: str) -> str:
    """The full training text (prompt followed by the response)."""
    return render_prompt(template, instruction) + response
