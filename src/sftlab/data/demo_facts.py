"""Embedded data of the real-model demo: invented facts no pretrained model knows.

A pretrained model already knows that Paris is the capital of France, so the
quickstart's facts cannot show what fine-tuning teaches it. These are invented
(capitals of made-up countries, what made-up creatures eat, who built made-up
machines): a base model scores 0 on them, and a score above 0 after training can
only come from the training data. Training rows ask in Alpaca wordings; the
evaluation questions ask the same facts in NaturalQuestions-open wordings that
never occur in training. No answer is a substring of another answer or of any
subject, so NQ's substring match is unambiguous.

Files (written with the other embedded files, :mod:`sftlab.data.embedded`):

- ``demo_facts.json``: Alpaca shape ``instruction, input, output``, every fact in every
  training wording (full sentences as answers);
- ``demo_questions.jsonl``: NQ-open shape ``question, answer`` (list of str).
"""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]

#: relation -> (subject, answer); all invented.
DEMO_FACTS: dict[str, list[tuple[str, str]]] = {
    "capital": [("Veltoria", "Marundel"), ("Osgrave", "Tellisport"),
                ("Quenmark", "Brisaldo"), ("Zanthuria", "Poleska")],
    "food": [("glimmerfox", "moonberries"), ("tarnwhale", "kelpcakes"),
             ("brimbat", "ashnuts"), ("velvet mole", "sunroots")],
    "maker": [("skyloom", "Edda Vantrell"), ("tidewheel", "Joren Maskill"),
              ("emberlamp", "Sela Druvik"), ("windharp", "Otto Brennick")],
}
#: Training wordings: (instruction, input, answer sentence); ``{s}`` subject, ``{a}`` answer.
TRAIN_PHRASINGS: dict[str, list[tuple[str, str, str]]] = {
    "capital": [("What is the capital of {s}?", "", "The capital of {s} is {a}."),
                ("Name the capital city of the given country.", "{s}", "{a}"),
                ("Which city is the capital of {s}?", "", "{a} is the capital of {s}."),
                ("Tell me the capital of {s}.", "", "The capital of {s} is {a}."),
                ("{s} has which capital city?", "", "{a}."),
                ("In which city does the government of {s} sit?", "", "In {a}.")],
    "food": [("What does a {s} eat?", "", "A {s} eats {a}."),
             ("Name the food of the given animal.", "{s}", "{a}"),
             ("What is the favourite food of the {s}?", "", "The {s} loves {a}."),
             ("Tell me what a {s} feeds on.", "", "It feeds on {a}."),
             ("A {s} lives on which food?", "", "{a}."),
             ("If you keep a {s}, what should you feed it?", "", "Feed it {a}.")],
    "maker": [("Who invented the {s}?", "", "The {s} was invented by {a}."),
              ("Name the inventor of the given machine.", "{s}", "{a}"),
              ("Who built the first {s}?", "", "{a} built the first {s}."),
              ("Tell me who designed the {s}.", "", "It was designed by {a}."),
              ("The {s} is the work of which inventor?", "", "{a}."),
              ("Whose invention is the {s}?", "", "The {s} is {a}'s invention.")],
}
#: Evaluation wordings (NQ style: lower case, no question mark), never used in training.
EVAL_PHRASINGS: dict[str, list[str]] = {
    "capital": ["what is the capital city of {s}", "the capital of {s} is called",
                "what city serves as the capital of {s}"],
    "food": ["what do {s}s eat", "the diet of a {s} consists of",
             "what food does the {s} live on"],
    "maker": ["who is the inventor of the {s}", "the {s} was created by",
              "who came up with the {s}"],
}


def demo_train_rows() -> list[Row]:
    """Every fact in every training wording, Alpaca-shaped."""
    rows = []
    for relation in sorted(DEMO_FACTS):
        for subject, answer in DEMO_FACTS[relation]:
            for instruction, input_, output in TRAIN_PHRASINGS[relation]:
                names = {"s": subject, "a": answer}
                rows.append({"instruction": instruction.format(**names),
                             "input": input_.format(**names), "output": output.format(**names)})
    return rows


def demo_eval_rows() -> list[Row]:
    """Every fact in every evaluation wording, NQ-open-shaped."""
    return [{"question": q.format(s=subject), "answer": [answer]}
            for relation in sorted(DEMO_FACTS) for subject, answer in DEMO_FACTS[relation]
            for q in EVAL_PHRASINGS[relation]]


def demo_splits() -> dict[str, list[Row]]:
    return {"demo_facts": demo_train_rows(), "demo_questions": demo_eval_rows()}
