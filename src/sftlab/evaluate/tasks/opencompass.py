"""OpenCompass 0.5.4's named dataset configs, its base-model prompt joining and its
text postprocessors, written for sftlab (the behaviour, checked against OpenCompass's
own code by ``tests/test_opencompass_parity.py``).

In the ``opencompass`` format every (task, shots) evaluation reproduces one named
config (:data:`CONFIGS`); :func:`default_config` gives the reference study's choice
per shot count (generative configs, see ``OPENCOMPASS.md``) and the likelihood
(``*_ppl_*``) configs stay available by name. The config name is recorded with every
score and is part of the evaluation id.

Prompt assembly follows OpenCompass for a base model (``LMTemplateParser`` without a
meta template): a prompt is a sequence of items (begin strings, HUMAN and BOT
prompts, in-context examples); the non-empty ones are joined with ``"\\n"``, and an
empty item still puts a ``"\\n"`` before the next one (so ``mmlu_zero_shot_gen_47e2c0``
starts with a newline: its ``</E>`` begin item is empty at 0 shots). :func:`join_items`
is that rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sftlab.errors import UserError

FORMAT = "opencompass"


@dataclass(frozen=True)
class OCConfig:
    """One OpenCompass dataset config as sftlab reproduces it.

    ``shots``: the shot counts it covers (None: any); ``kind``: ``gen`` (the model
    writes an answer; ``postprocess`` extracts it) or ``ppl`` (choices ranked by
    likelihood); ``notes``: where sftlab differs or substitutes data (recorded).
    """

    name: str
    task: str
    kind: str
    shots: tuple[int, ...] | None = None
    postprocess: str | None = None
    max_new_tokens: int | None = None
    notes: str = ""

    def covers(self, shots: int) -> bool:
        return self.shots is None or shots in self.shots


CONFIGS: dict[str, OCConfig] = {c.name: c for c in (
    OCConfig("math_0shot_gen_393424", "math", "gen", (0,), "math_postprocess_v2", 1024),
    OCConfig("gsm8k_0shot_gen_a58960", "gsm8k", "gen", (0,), "gsm8k_postprocess", 512),
    OCConfig("gsm8k_gen_1d7fe4", "gsm8k", "gen", tuple(range(1, 26)), "gsm8k_postprocess", 512,
             notes="4-shot: the config's exemplars; other k: the first k train items in the "
                   "same form (sftlab's extension)"),
    OCConfig("mbpp_gen_830460", "mbpp", "gen", (0, 1, 2, 3), "mbpp", 512,
             notes="3-shot as the config; fewer shots: its first k exemplars (sftlab's)"),
    OCConfig("humaneval_openai_sample_evals_gen_dcae0e", "humaneval", "gen", (0,),
             "humaneval_postprocess_v2", 512),
    OCConfig("hellaswag_gen_6faab5", "hellaswag", "gen", (0,), "first_option_postprocess", 512),
    OCConfig("hellaswag_10shot_gen_e42710", "hellaswag", "gen", tuple(range(1, 11)), "first_option_postprocess",
             512, notes="examples: the first k train rows (OpenCompass: rows 0-9 of "
                        "hellaswag_train_sampled25.jsonl, which sftlab does not have)"),
    OCConfig("hellaswag_ppl_47bff9", "hellaswag", "ppl", (0,)),
    OCConfig("hellaswag_10shot_ppl_59c85e", "hellaswag", "ppl", tuple(range(1, 11)),
             notes="examples: the first k train rows (OpenCompass: rows 0-9 of "
                   "hellaswag_train_sampled25.jsonl)"),
    OCConfig("nq_open_gen_e93f8a", "nq_open", "gen", None, "nq", 50),
    OCConfig("SuperGLUE_BoolQ_gen_883d50", "boolq", "gen", (0,), "first_capital_postprocess", 512),
    OCConfig("SuperGLUE_BoolQ_few_shot_gen_ba58ea", "boolq", "gen", tuple(range(1, 11)),
             "first_capital_postprocess", 50,
             notes="examples: evaluation rows 0, 2, 4, ... (as OpenCompass, whose BoolQ data "
                   "has no train split); 5-shot is the config, other k its first k "
                   "(sftlab's)"),
    OCConfig("SuperGLUE_BoolQ_ppl_314b96", "boolq", "ppl", None,
             notes="k > 0: train rows 0, 2, 4, ... before the item (sftlab's extension)"),
    OCConfig("mmlu_zero_shot_gen_47e2c0", "mmlu", "gen", (0,), "first_option_postprocess", 256),
    OCConfig("mmlu_gen_4d595a", "mmlu", "gen", None, "first_option_postprocess", 512,
             notes="5-shot is the config (dev rows 0-4 of the subject); other k: the first k"),
    OCConfig("mmlu_ppl_ac766d", "mmlu", "ppl", None),
)}

# (task, shots) -> the reference study's config; tasks absent here: the task's first config
# covering the shot count.
DEFAULTS: dict[tuple[str, int], str] = {
    ("math", 0): "math_0shot_gen_393424",
    ("gsm8k", 0): "gsm8k_0shot_gen_a58960",
    ("gsm8k", 4): "gsm8k_gen_1d7fe4",
    ("mbpp", 3): "mbpp_gen_830460",
    ("humaneval", 0): "humaneval_openai_sample_evals_gen_dcae0e",
    ("hellaswag", 0): "hellaswag_gen_6faab5",
    ("hellaswag", 10): "hellaswag_10shot_gen_e42710",
    ("boolq", 0): "SuperGLUE_BoolQ_gen_883d50",
    ("boolq", 1): "SuperGLUE_BoolQ_few_shot_gen_ba58ea",
    ("boolq", 5): "SuperGLUE_BoolQ_few_shot_gen_ba58ea",
    ("mmlu", 0): "mmlu_zero_shot_gen_47e2c0",
    ("mmlu", 5): "mmlu_gen_4d595a",
}

VARIANTS = ("gen", "ppl")


def configs_of(task: str) -> tuple[str, ...]:
    """The config names of a task, in registry order."""
    return tuple(n for n, c in CONFIGS.items() if c.task == task)


def default_config(task: str, shots: int, variant: str | None = None) -> str | None:
    """The config a (task, shots) runs when none is named (``variant``: the first config of
    that kind covering the shots); None when the task has no named configs."""
    names = configs_of(task)
    if not names:
        return None
    if variant is None and (task, shots) in DEFAULTS:
        return DEFAULTS[(task, shots)]
    for name in names:
        cfg = CONFIGS[name]
        if cfg.covers(shots) and (variant is None or cfg.kind == variant):
            return name
    kinds = f" of kind {variant}" if variant else ""
    raise UserError(f"task {task}: no OpenCompass config{kinds} covers {shots}-shot "
                    f"(configs: {', '.join(names)})")


def resolve_config(task: str, shots: int, config: str | None) -> str | None:
    """``config`` checked against the task and shot count (a name, or ``gen`` / ``ppl``),
    else the default; None for tasks without named configs."""
    names = configs_of(task)
    if config in VARIANTS:
        if not names:
            raise UserError(f"task {task}: has no OpenCompass configs to choose {config!r} from")
        return default_config(task, shots, config)
    if config is None:
        return default_config(task, shots)
    if config not in names:
        known = ", ".join(names) if names else "none"
        raise UserError(f"task {task}: unknown OpenCompass config {config!r} "
                        f"(known: {known}; or 'gen' / 'ppl')")
    cfg = CONFIGS[config]
    if not cfg.covers(shots):
        raise UserError(f"task {task}: config {config} covers "
                        f"{', '.join(map(str, cfg.shots or ()))}-shot, not {shots}-shot")
    return config


def kind_of(config: str | None) -> str | None:
    return CONFIGS[config].kind if config else None


# ---------------------------------------------------------------- prompt assembly


@dataclass(frozen=True)
class Round:
    """One dialogue round of a config's template: a HUMAN turn and (optionally) a BOT turn.
    The last round of a prompt is the one the model answers (its BOT turn is the cue)."""

    human: str
    bot: str | None = None


@dataclass(frozen=True)
class Human:
    """A lone HUMAN turn in a template's ``begin`` (HellaSwag 10-shot's instruction)."""

    text: str


# A prompt item: a raw string of the template's ``begin`` (an empty one included: it takes a
# separator in base-model joining), a lone HUMAN turn, or a round.
PromptItem = str | Human | Round


@dataclass(frozen=True)
class MetaTemplate:
    """A meta template (OpenCompass's ``meta_template``: HUMAN and BOT begin/end strings)
    made from a study template ``{prefix}{instruction}{middle}{response}{suffix}``: HUMAN
    begin = prefix, HUMAN end = the newlines that open ``middle``, BOT begin = the rest of
    ``middle``, BOT end = suffix, or ``"\\n"`` when the template ends at ``{response}``."""

    human_begin: str
    human_end: str
    bot_begin: str
    bot_end: str

    @classmethod
    def from_template(cls, template: str) -> MetaTemplate:
        head, _, suffix = template.partition("{response}")
        prefix, _, middle = head.partition("{instruction}")
        unescape = lambda t: t.replace("{{", "{").replace("}}", "}")  # noqa: E731
        prefix, middle, suffix = unescape(prefix), unescape(middle), unescape(suffix)
        newlines = len(middle) - len(middle.lstrip("\n"))
        return cls(prefix, middle[:newlines], middle[newlines:], suffix or "\n")

    def as_opencompass(self) -> dict:
        """The same meta template in OpenCompass's config shape."""
        return {"round": [
            {"role": "HUMAN", "begin": self.human_begin, "end": self.human_end},
            {"role": "BOT", "begin": self.bot_begin, "end": self.bot_end, "generate": True}]}


def render(items: Sequence[PromptItem], meta: MetaTemplate | None = None) -> str:
    """A generation prompt as OpenCompass's ``LMTemplateParser`` assembles it.

    Without a meta template (a base model, ``HuggingFaceBaseModel``) the turns' texts are
    joined by :func:`join_items`. With one (``template_mode: rounds``): raw strings as they
    are, each HUMAN turn ``begin + text + end``, each BOT turn ``begin + text + end``, and the
    last round's BOT turn only its ``begin``: generation starts there."""
    if meta is None:
        flat: list[str] = []
        for item in items:
            if isinstance(item, Round):
                flat += [item.human] + ([item.bot] if item.bot is not None else [])
            else:
                flat.append(item.text if isinstance(item, Human) else item)
        return join_items(flat)
    rounds = [i for i, item in enumerate(items) if isinstance(item, Round)]
    last = rounds[-1] if rounds else -1
    out = ""
    for i, item in enumerate(items):
        if isinstance(item, str):
            out += item
        elif isinstance(item, Human):
            out += meta.human_begin + item.text + meta.human_end
        else:
            out += meta.human_begin + item.human + meta.human_end + meta.bot_begin
            if i == last:
                break
            out += (item.bot or "") + meta.bot_end
    return out


def gen_query(items: Sequence[PromptItem], stop: tuple[str, ...] = (),
              max_new_tokens: int = 512):  # -> GenQuery (imported late: no import cycle)
    """A generation query whose prompt is ``items`` rendered for a base model, keeping the
    rounds for ``template_mode: rounds``."""
    from sftlab.evaluate.tasks.base import GenQuery

    return GenQuery(render(items), stop, max_new_tokens, tuple(items))


def join_items(items: Sequence[str]) -> str:
    """OpenCompass's base-model joining of prompt items (``LMTemplateParser`` without a
    meta template): non-empty items joined by ``"\\n"``; an empty item is dropped but a
    ``"\\n"`` still precedes the next non-empty one."""
    out, sep = "", ""
    for item in items:
        if item:
            out += sep + item
        sep = "\n"
    return out


# ---------------------------------------------------------------- postprocessors

# OpenCompass's ``first_option_postprocess`` patterns, in its order. Two of its entries lack
# a separating comma and are one pattern (故选... followed by 只有选项...对); kept so.
_OPTION_PATTERNS = (
    r"答案是?\s*([{o}])", r"答案是?\s*：\s*([{o}])", r"答案是?\s*:\s*([{o}])",
    r"答案选项应?该?是\s*([{o}])", r"答案选项应?该?为\s*([{o}])", r"答案应该?是\s*([{o}])",
    r"答案应该?选\s*([{o}])", r"答案选项为?\s*：\s*([{o}])",
    r"答案选项为?\s+\(?\*?\*?([{o}])\*?\*?\)?", r"答案选项是?\s*:\s*([{o}])",
    r"答案为\s*([{o}])", r"答案选\s*([{o}])", r"选择?\s*([{o}])",
    r"故选?\s*([{o}])" r"只有选?项?\s?([{o}])\s?是?对",
    r"只有选?项?\s?([{o}])\s?是?错", r"只有选?项?\s?([{o}])\s?不?正确",
    r"只有选?项?\s?([{o}])\s?错误", r"说法不?对选?项?的?是\s?([{o}])",
    r"说法不?正确选?项?的?是\s?([{o}])", r"说法错误选?项?的?是\s?([{o}])",
    r"([{o}])\s?是正确的", r"([{o}])\s?是正确答案", r"选项\s?([{o}])\s?正确",
    r"所以答\s?([{o}])", r"所以\s?([{o}][.。$]?$)", r"所有\s?([{o}][.。$]?$)",
    r"[\s，：:,]([{o}])[。，,\.]?$", r"[\s，,：:][故即]([{o}])[。\.]?$",
    r"[\s，,：:]因此([{o}])[。\.]?$", r"[是为。]\s?([{o}])[。\.]?$",
    r"因此\s?([{o}])[。\.]?$", r"显然\s?([{o}])[。\.]?$", r"答案是\s?(\S+)(?:。|$)",
    r"答案应该是\s?(\S+)(?:。|$)", r"答案为\s?(\S+)(?:。|$)", r"(?i)ANSWER\s*:\s*([{o}])",
    r"[Tt]he answer is:?\s+\(?([{o}])\)?", r"[Tt]he answer is:?\s+\(?\*?\*?([{o}])\*?\*?\)?",
    r"[Tt]he answer is option:?\s+\(?([{o}])\)?", r"[Tt]he correct answer is:?\s+\(?([{o}])\)?",
    r"[Tt]he correct answer is option:?\s+\(?([{o}])\)?",
    r"[Tt]he correct answer is:?.*?boxed{{([{o}])}}",
    r"[Tt]he correct option is:?.*?boxed{{([{o}])}}",
    r"[Tt]he correct answer option is:?.*?boxed{{([{o}])}}",
    r"[Tt]he answer to the question is:?\s+\(?([{o}])\)?", r"^选项\s?([{o}])",
    r"^([{o}])\s?选?项", r"(\s|^)[{o}][\s。，,：:\.$]", r"1.\s?(.*?)$", r"1.\s?([{o}])[.。$]?$",
)
_CUSHION_PATTERNS = (r"([{o}]):", r"([{o}])")


def first_option_postprocess(text: str, options: str = "ABCD", cushion: bool = True) -> str:
    """The first option letter found in ``text`` (OpenCompass's pattern cascade); ``""``
    when none."""
    patterns = _OPTION_PATTERNS + (_CUSHION_PATTERNS if cushion else ())
    text = text.strip()
    for pattern in patterns:
        match = re.search(pattern.replace("{o}", options).replace("{{", "{").replace("}}", "}"),
                          text, re.DOTALL)
        if match:
            found = match.group(1) if match.group(1) else match.group(0)
            for letter in options:
                if letter in found:
                    return letter
    return ""


def first_capital_postprocess(text: str) -> str:
    """The first upper-case character of ``text`` (OpenCompass's), ``""`` when none."""
    return next((ch for ch in text if ch.isupper()), "")


POSTPROCESSORS = {
    "first_option_postprocess": first_option_postprocess,
    "first_capital_postprocess": first_capital_postprocess,
}
