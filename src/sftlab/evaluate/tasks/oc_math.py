"""OpenCompass 0.5.4's MATH answer check (``math_postprocess_v2`` + ``MATHEvaluator(
version='v2')``), written for sftlab: the headline of ``math_0shot_gen_393424``.

The gold answer is the last ``\\boxed{...}`` of the reference solution (``MATHDataset``);
the prediction is ``math_postprocess_v2`` of the output (its last ``\\boxed{}``, else the
sentence saying "final answer" / "answer is", else the first sentence, normalised); the
two are equal when they are equal as strings after ``_strip_string_v2``, or after
``normalize_final_answer`` of those, or after ``normalize_final_answer`` of the raw
strings, or raw. So ``\\boxed{0.5}`` against ``\\frac12`` is wrong here (Math-Verify, the
secondary metric, accepts it). ``tests/test_opencompass_parity.py`` checks the verdicts
against OpenCompass's own functions.
"""

from __future__ import annotations

import re

_SUBSTITUTIONS = (("an ", ""), ("a ", ""), (".$", "$"), ("\\$", ""), (r"\ ", ""), (" ", ""),
                  ("mbox", "text"), (",\\text{and}", ","), ("\\text{and}", ","),
                  ("\\text{m}", "\\text{}"), ("\\le", "<"))
_REMOVED = ("square", "ways", "integers", "dollars", "mph", "inches", "ft", "hours", "km",
            "units", "\\ldots", "sue", "points", "feet", "minutes", "digits", "cents", "degrees",
            "cm", "gm", "pounds", "meters", "meals", "edges", "students", "childrentickets",
            "multiples", "\\text{s}", "\\text{.}", "\\text{\ns}", "\\text{}^2", "\\text{}^3",
            "\\text{\n}", "\\text{}", r"\mathrm{th}", r"^\circ", r"^{\circ}", r"\;", r",\!",
            "{,}", '"', "\\dots", "\n", "\r", "\f")


def last_boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, or None."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start: i + 1]
    return None


def boxed_answer(text: str, strip_double_curly_brace: bool = False) -> str | None:
    """The content of the last ``\\boxed{}`` (``\\fbox`` found but not unwrapped: None)."""
    boxed = last_boxed(text)
    if boxed is None or not boxed.startswith("\\boxed{") or not boxed.endswith("}"):
        return None
    answer = boxed[len("\\boxed{"):-1]
    if strip_double_curly_brace:
        match = re.match(r"^\{(.*)\}$", answer)
        if match:
            answer = match.group(1)
    return answer


def normalize_final_answer(answer: str) -> str:
    """OpenCompass's ``normalize_final_answer`` (raises on a leftover newline, as it does)."""
    for before, after in _SUBSTITUTIONS:
        answer = answer.replace(before, after)
    for expr in _REMOVED:
        answer = answer.replace(expr, "")
    answer = re.sub(r"(\\text\{)\((.*?)\)(\})", "\\2", answer)
    answer = re.sub(r"(\\text\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\textbf\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\overline\{)(.*?)(\})", "\\2", answer)
    answer = re.sub(r"(\\boxed\{)(.*)(\})", "\\2", answer)
    if any(ch in answer for ch in "\n\r\f"):
        raise ValueError("newline left in the answer")
    for pattern in (r"finalansweris(.*)", r"answer?is:?(.*)", r"oxed\{(.*?)\}", r"\$(.*?)\$"):
        found = re.findall(pattern, answer)
        if found:
            answer = found[-1]
    answer = answer.strip()
    if "rac" in answer and "\\frac" not in answer:
        answer = answer.replace("rac", "\\frac")
    answer = re.sub(r"(frac)([^{])(.)", "frac{\\2}{\\3}", answer)
    answer = re.sub(r"(sqrt)([^{])", "sqrt{\\2}", answer)
    answer = answer.replace("$", "")
    if answer.replace(",", "").isdigit():
        answer = answer.replace(",", "")
    return answer


def math_postprocess_v2(text: str) -> str:
    """The predicted answer of an output (OpenCompass's ``math_postprocess_v2``)."""
    boxed = boxed_answer(text, strip_double_curly_brace=True)
    if boxed:
        return boxed
    for sentence in text.split("."):
        if re.search("final answer|answer is", sentence.lower()):
            return normalize_final_answer(sentence)
    return normalize_final_answer(text.split(".")[0])


def _fix_fracs(s: str) -> str:
    parts = s.split("\\frac")
    out = parts[0]
    for sub in parts[1:]:
        out += "\\frac"
        if sub[:1] == "{":
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b, rest = sub[0], sub[1], sub[2:]
        out += "{" + a + "}{" + b + "}" + rest if b != "{" else "{" + a + "}" + b + rest
    return out


def _fix_a_slash_b(s: str) -> str:
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        raise  # OpenCompass lets this propagate (is_equiv then compares otherwise)
    if s != f"{a}/{b}":
        return s
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def strip_string_v2(s: str) -> str:
    """OpenCompass's ``MATHEvaluator._strip_string_v2``."""
    s = str(s).strip().replace("\n", "").rstrip(".")
    s = s.replace("\\!", "").replace("\\ ", "")
    s = s.replace("\\\\", "\\").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    unitless = re.sub(r"\\text{.*?}$", "", s).strip()
    if unitless != "" and unitless != s:
        s = unitless
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\text", "").replace("x\\in", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("\\cdot", "")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("and", "").replace("\\mathbf", "")
    s = re.sub(r"\\mbox{.*?}", "", s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = re.sub(r"(\d+)\.0+([^\d])", r"\1\2", s)
    s = re.sub(r"(\d+)\.0+$", r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    sides = s.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        s = sides[1]
    s = re.sub(r"\\sqrt(\w+)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    return _fix_a_slash_b(s)


def is_equiv_v2(pred: str | None, gold: str | None) -> bool:
    """``MATHEvaluator(version='v2').is_equiv(pred, gold)``."""
    if pred is None and gold is None:
        return True
    if pred is None or gold is None:
        return False
    try:
        a, b = strip_string_v2(pred), strip_string_v2(gold)
        if a == b or normalize_final_answer(a) == normalize_final_answer(b):
            return True
    except Exception:  # noqa: BLE001 - OpenCompass swallows every failure here
        pass
    try:
        if normalize_final_answer(pred) == normalize_final_answer(gold):
            return True
    except Exception:  # noqa: BLE001
        pass
    return pred == gold
