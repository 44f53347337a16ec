"""llm-jp-eval v1.3's datasets: what each is (category, metrics, output length,
instruction) and how its native files become train / dev / test samples.

Every dataset is one :class:`Dataset` row of :data:`DATASETS`: a declarative spec
(name, category, metrics, output length, instruction, the file names it reads) plus
a ``build`` function that turns the files found into :class:`Splits`, exactly as
v1.3's preprocessors do (same fields, same input strings, same seeded shuffles:
``random.seed(42)`` then ``random.shuffle``, 90/10 train/dev cuts unless noted).

Files are found by their native names (``find_files``): ``--data`` is one native
file, a folder holding them, or (the suite) a folder searched recursively, such as
``../shared/data``. llm-jp-eval's own preprocessed files
(``evaluation/{train,dev,test}/<name>.json``: ``instruction``, ``output_length``,
``metrics``, ``samples[{input, output}]``) are read too, for every dataset; they are
the only source sftlab reads for the Wikipedia-annotated-corpus (FA) and the
ALT / wikicorpus (MT) datasets, whose native formats (KNP files, the ALT and Kyoto
wikicorpus archives) need llm-jp-eval's own preprocessing.

Evaluation items are the test split in the order these builders produce it; a replay
id is the 0-based index in it.
"""

from __future__ import annotations

import csv
import json
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sftlab.errors import UserError

HEADER = ("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。"
          "要求を適切に満たす応答を書きなさい。\n\n### 指示:\n")
CATEGORIES = ("NLI", "QA", "RC", "MC", "HE", "EL", "FA", "MR", "MT")


@dataclass(frozen=True)
class Sample:
    input: str
    output: str


@dataclass
class Splits:
    """A dataset's samples by split, and where they came from."""

    train: list[Sample]
    dev: list[Sample]
    test: list[Sample]
    sources: list[str] = field(default_factory=list)
    instruction: str | None = None  # from a preprocessed file: overrides the spec's
    output_length: int | None = None
    fewshot_note: str | None = None  # set when the few-shot pool is not the train split


def build_prompt(instruction: str, shots: list[Sample], text: str) -> str:
    """v1.3's ``get_evaluation_prompt`` (no custom template), filled with ``text``."""
    prompt = HEADER + instruction
    for shot in shots:
        prompt += f"\n\n### 入力:\n{shot.input}\n\n### 応答:\n{shot.output}"
    return prompt + f"\n\n### 入力:\n{text}\n\n### 応答:\n"


# ---------------------------------------------------------------- helpers


def _shuffled(samples: list[Sample], rng: random.Random | None = None) -> list[Sample]:
    out = list(samples)
    (rng or random.Random(42)).shuffle(out)
    return out


def _cut(samples: list[Sample], *fractions: float) -> list[list[Sample]]:
    bounds = [0, *(int(len(samples) * f) for f in fractions), len(samples)]
    return [samples[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _train_dev(train_rows: list[Sample], test: list[Sample]) -> tuple:
    train, dev = _cut(_shuffled(train_rows), 0.9)
    return train, dev, test


def _tsv_rows(path: Path) -> list[list[str]]:
    """Lines after the header split on tabs, as v1.3 reads them (no CSV quoting)."""
    with path.open(encoding="utf-8") as fh:
        next(fh, None)
        return [line.split("\t") for line in fh]


def _json_lines(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _nli(premise: str, hypothesis: str, label: str) -> Sample:
    return Sample(f"前提：{premise}\n仮説：{hypothesis}", label)


def _one(files: dict[str, list[Path]], role: str) -> Path | None:
    found = files.get(role) or []
    return found[0] if found else None


# ---------------------------------------------------------------- builders (native files)


def _jamp(files: dict[str, list[Path]]) -> Splits:
    def read(p: Path | None) -> list[Sample]:
        return [_nli(r[1], r[2], r[3]) for r in _tsv_rows(p)] if p else []

    return Splits(*_train_dev(read(_one(files, "train")), read(_one(files, "test"))))


def _janli(files: dict[str, list[Path]]) -> Splits:
    train, test = [], []
    for r in _tsv_rows(files["all"][0]):
        (test if r[-1].strip() == "test" else train).append(_nli(r[1], r[2], r[3]))
    return Splits(*_train_dev(train, test))


def _jsick(files: dict[str, list[Path]]) -> Splits:
    def read(p: Path | None) -> list[Sample]:
        return [_nli(r[8], r[9], r[10]) for r in _tsv_rows(p)] if p else []

    return Splits(*_train_dev(read(_one(files, "train")), read(_one(files, "test"))))


def _jglue_builder(make: Callable[[dict], Sample]) -> Callable[[dict[str, list[Path]]], Splits]:
    def build(files: dict[str, list[Path]]) -> Splits:
        train, test = _one(files, "train"), _one(files, "test")
        return Splits(*_train_dev([make(d) for d in _json_lines(train)] if train else [],
                                  [make(d) for d in _json_lines(test)] if test else []))
    return build


def _jnli_sample(d: dict) -> Sample:
    return _nli(d["sentence1"], d["sentence2"], d["label"])


def _jsts_sample(d: dict) -> Sample:
    return Sample(f"文1：{d['sentence1']}\n文2：{d['sentence2']}", str(d["label"]))


def _jcqa_sample(d: dict) -> Sample:
    choices = ",".join(f"{i}.{d[f'choice{i}']}" for i in range(5))
    return Sample(f"質問：{d['question']}\n選択肢：{choices}", str(d["label"]))


def _jsquad(files: dict[str, list[Path]]) -> Splits:
    def read(p: Path | None) -> list[Sample]:
        if p is None:
            return []
        data = json.loads(p.read_text(encoding="utf-8"))
        return [Sample(f"文章：{para['context']}\n質問：{q['question']}", q["answers"][0]["text"])
                for doc in data["data"] for para in doc["paragraphs"] for q in para["qas"]]

    return Splits(*_train_dev(read(_one(files, "train")), read(_one(files, "test"))))


JSEM_FILES = ("Adjectives", "Adverb", "Attitudes", "AuxiliaryVerb", "CaseParticle",
              "Comparatives", "CompoundAdjective", "CompoundVerb", "Conditional",
              "Conjunction", "Coordination", "Ellipsis", "GeneralizedQuantifier", "Modality",
              "NP", "NewAdjective", "NominalAnaphora", "Plurals", "Question",
              "TemporalReference", "Toritate", "Verbs")
JSEM_ANSWERS = ("yes", "no", "unknown", "undef")


def _jsem(files: dict[str, list[Path]]) -> Splits:
    by_stem = {p.stem: p for p in files["xml"]}
    samples = []
    for stem in JSEM_FILES:
        if stem not in by_stem:
            continue
        for problem in ET.parse(by_stem[stem]).getroot().iter("problem"):
            if problem.get("answer") not in JSEM_ANSWERS:
                continue
            premise = "".join(p.findtext("script") or "" for p in problem.findall("p"))
            samples.append(_nli(premise, problem.findtext("h/script") or "", problem.get("answer")))
    train, dev, test = _cut(_shuffled(samples), 0.8, 0.9)
    return Splits(train, dev, test)


def _niilc(files: dict[str, list[Path]]) -> Splits:
    def read(p: Path | None) -> list[Sample]:
        out = []
        for q in ET.parse(p).getroot().iter("question") if p else ():
            answers = [a.text for a in q.findall("answers/answer")]
            answer = ",".join(a for a in answers if a) if len(answers) > 1 else (answers or [None])[0]
            if answer is None or answer == "-":
                continue
            out.append(Sample(f"質問：{q.findtext('text')}", answer))
        return out

    return Splits(*_train_dev(read(_one(files, "train")), read(_one(files, "test"))))


def _jemhopqa(files: dict[str, list[Path]]) -> Splits:
    def read(p: Path | None) -> list[Sample]:
        rows = json.loads(p.read_text(encoding="utf-8")) if p else []
        return [Sample(f"質問：{r['question']}", r["answer"]) for r in rows]

    return Splits(*_train_dev(read(_one(files, "train")), read(_one(files, "test"))))


JMMLU_FILES = (
    "econometrics", "human_aging", "high_school_psychology", "professional_medicine",
    "electrical_engineering", "college_mathematics", "medical_genetics", "formal_logic",
    "nutrition", "prehistory", "world_religions", "japanese_history", "high_school_geography",
    "international_law", "logical_fallacies", "human_sexuality", "philosophy",
    "college_medicine", "professional_accounting", "high_school_mathematics", "global_facts",
    "business_ethics", "high_school_chemistry", "college_physics", "high_school_statistics",
    "moral_disputes", "high_school_biology", "miscellaneous", "high_school_macroeconomics",
    "high_school_computer_science", "abstract_algebra", "elementary_mathematics",
    "jurisprudence", "security_studies", "high_school_physics", "college_computer_science",
    "public_relations", "management", "computer_security", "college_chemistry", "anatomy",
    "high_school_european_history", "machine_learning", "virology",
    "high_school_microeconomics", "astronomy", "world_history", "college_biology",
    "clinical_knowledge", "conceptual_physics", "professional_psychology", "sociology",
    "marketing")
JMMLU_TRAIN = 32  # v1.3: 16 from each half form the few-shot split


def _jmmlu(files: dict[str, list[Path]]) -> Splits:
    by_subject = {p.stem.removeprefix("jmmlu_"): p for p in files["csv"]}
    rng = random.Random(42)
    dev, test = [], []
    for subject in JMMLU_FILES:
        if subject not in by_subject:
            continue
        with by_subject[subject].open(encoding="utf-8-sig", newline="") as fh:
            rows = [Sample(f"質問：{r[0]}\n選択肢：A.{r[1]},B.{r[2]},C.{r[3]},D.{r[4]}", r[5])
                    for r in csv.reader(fh, quoting=csv.QUOTE_ALL)]
        rng.shuffle(rows)
        dev += rows[: len(rows) // 2]
        test += rows[len(rows) // 2:]
    rng.shuffle(dev)
    rng.shuffle(test)
    half = JMMLU_TRAIN // 2
    return Splits(dev[:half] + test[:half], dev[half:], test[half:])


def _mmlu_en(files: dict[str, list[Path]]) -> Splits:
    """Hendrycks' ``data/{dev,val,test}/<subject>_<split>.csv`` (headerless, A-D): each
    subject shuffled (seed 42, re-seeded per file), then interleaved subject by subject."""
    def read(paths: list[Path]) -> list[Sample]:
        per_subject = []
        for path in sorted(paths):
            with path.open(encoding="utf-8", newline="") as fh:
                rows = [Sample(f"Qusetion: {r[0]}\nChoices: A.{r[1]}, B.{r[2]}, C.{r[3]}, "
                               f"D.{r[4]}", r[5]) for r in csv.reader(fh)]
            per_subject.append(_shuffled(rows))
        if not per_subject:
            return []
        n = min(len(s) for s in per_subject)
        out = [s[i] for i in range(n) for s in per_subject]
        return out + [x for s in per_subject for x in s[n:]]

    return Splits(read(files.get("train", [])), read(files.get("dev", [])),
                  read(files.get("test", [])))


def _chabsa(files: dict[str, list[Path]]) -> Splits:
    samples = []
    for path in sorted(files["json"]):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for sentence in doc["sentences"]:
            outputs = [f"{o['target']} {o['polarity']}" for o in sentence["opinions"]]
            if outputs:
                samples.append(Sample(f"文章：{sentence['sentence']}", "\n".join(outputs)))
    train, dev, test = _cut(_shuffled(samples), 0.8, 0.9)
    return Splits(train, dev, test)


def _mawps(files: dict[str, list[Path]]) -> Splits:
    delimiter = "\n解答："
    train = []
    for role in ("zero_shot", "shot"):
        for example in json.loads(files[role][0].read_text(encoding="utf-8")):
            question, answer = example["shot_example"].split(delimiter)
            train.append(Sample(question, answer.split("答えは")[1].split("です。")[0]))
    test = [Sample(e["question"].split(delimiter)[0], str(e["answer"]))
            for e in json.loads(files["test"][0].read_text(encoding="utf-8"))]
    dev, test = _cut(_shuffled(test), 0.5)
    return Splits(train, dev, test)


def read_preprocessed(files: dict[str, list[Path]]) -> Splits:
    """llm-jp-eval's own ``evaluation/<split>/<name>.json`` files."""
    splits: dict[str, list[Sample]] = {}
    meta: dict = {}
    for role in ("train", "dev", "test"):
        path = _one(files, f"pre_{role}")
        if path is None:
            splits[role] = []
            continue
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or "samples" not in doc:
            raise UserError("not an llm-jp-eval evaluation file (no 'samples')", where=str(path))
        meta = meta or doc
        splits[role] = [Sample(str(s["input"]), str(s["output"])) for s in doc["samples"]]
    return Splits(splits["train"], splits["dev"], splits["test"],
                  instruction=meta.get("instruction"), output_length=meta.get("output_length"))


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Dataset:
    """One llm-jp-eval dataset. ``files`` maps a role to regexes over the lower-cased
    path; ``required`` roles must be found for the native files to be used; ``lang`` is
    the target language of MT datasets (BLEU tokenizer)."""

    name: str
    category: str | None
    metrics: tuple[str, ...]
    output_length: int
    instruction: str | None
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    build: Callable[[dict[str, list[Path]]], Splits] | None = None
    lang: str = "ja"
    source: str = ""  # what the native data is, for --help and errors

    @property
    def metric(self) -> str:
        """The headline metric (the one v1.3 averages in the category)."""
        return self.metrics[0]


def _jglue_files(name: str) -> dict[str, tuple[str, ...]]:
    return {"train": (rf"{name}[^/]*/train-v1\.1\.json$", rf"(^|/){name}_train_v1\.[13]\.json$"),
            "test": (rf"{name}[^/]*/valid-v1\.1\.json$", rf"(^|/){name}_valid_v1\.1\.json$")}


_NLI_TAIL = "それ以外には何も含めないことを厳守してください。\n\n制約：\n"
_MT_JA = ("これから提示する英語の文章を日本語に翻訳してください。"
          "必ず日本語の訳文のみを出力し、それ以外には何も含めないことを厳守してください。")
_MT_EN = ("これから提示する日本語の文章を英語に翻訳してください。"
          "必ず英語の訳文のみを出力し、それ以外には何も含めないことを厳守してください。")

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("jamp", "NLI", ("exact_match",), 3,
            "前提と仮説の関係をentailment、contradiction、neutralの中から回答してください。" + _NLI_TAIL
            + "- 前提から仮説が、時間関係上導出可能である場合はentailmentと出力\n"
            "- 前提と仮説が両立しえない場合はcontradictionと出力\n"
            "- そのいずれでもない場合はneutralと出力",
            {"train": (r"(^|/)train_all\.tsv$",), "test": (r"(^|/)test_2\.tsv$",)},
            ("test",), _jamp, source="Jamp train_all.tsv + test_2.tsv"),
    Dataset("janli", "NLI", ("exact_match",), 7,
            "前提と仮説の関係をentailment、non-entailmentの中から回答してください。" + _NLI_TAIL
            + "- 前提に対して仮説が同じ意味を含む場合は、entailmentと出力\n"
            "- 前提に対して仮説が異なる意味を含む場合は、non-entailmentと出力",
            {"all": (r"(^|/)janli\.tsv$",)}, ("all",), _janli, source="janli.tsv"),
    Dataset("jnli", "NLI", ("exact_match",), 3,
            "前提と仮説の関係をentailment、contradiction、neutralの中から回答してください。" + _NLI_TAIL
            + "- 前提から仮説が、論理的知識や常識的知識を用いて導出可能である場合はentailmentと出力\n"
            "- 前提と仮説が両立しえない場合はcontradictionと出力\n"
            "- そのいずれでもない場合はneutralと出力",
            _jglue_files("jnli"), ("test",), _jglue_builder(_jnli_sample),
            source="JGLUE jnli-v1.1 train/valid JSON lines"),
    Dataset("jsem", "NLI", ("exact_match",), 3,
            "前提と仮説の関係をyes、no、unknown、undefの中から回答してください。" + _NLI_TAIL
            + "- 前提が仮説を含意する場合はyesと出力\n"
            "- 前提が仮説の否定を含意する場合はnoと出力\n"
            "- 前提が仮説を含意せず、その否定も含意しない場合はunknownと出力\n"
            "- 与えられた情報のみからは判断ができない場合はundefと出力",
            {"xml": (r"jsem[^/]*/(?:[^/]+/)*[a-z]+\.xml$",)}, ("xml",), _jsem,
            source="JSeM data/v1.0/*.xml"),
    Dataset("jsick", "NLI", ("exact_match",), 3,
            "前提と仮説の関係をentailment、contradiction、neutralの中から回答してください。" + _NLI_TAIL
            + "- 前提が真であるとき仮説が必ず真になる場合はentailmentと出力\n"
            "- 前提が真であるとき仮説が必ず偽になる場合はcontradictionと出力\n"
            "- そのいずれでもない場合はneutralと出力",
            {"train": (r"jsick/train\.tsv$",), "test": (r"jsick/test\.tsv$",)}, ("test",), _jsick,
            source="JSICK jsick/train.tsv + test.tsv"),
    Dataset("jemhopqa", "QA", ("char_f1",), 15,
            "質問を入力とし、回答を出力してください。回答の他には何も含めないことを厳守してください。"
            "回答が'はい'と'いいえ'で答えることができる場合、'YES'と'NO'で答えてください。",
            {"train": (r"jemhopqa[^/]*/corpus/train\.json$",),
             "test": (r"jemhopqa[^/]*/corpus/dev\.json$",)}, ("test",), _jemhopqa,
            source="JEMHopQA corpus/train.json + dev.json"),
    Dataset("niilc", "QA", ("char_f1",), 180,
            "質問に対する答えを出力してください。回答の他には何も含めないことを厳守してください。"
            "答えが複数の場合、コンマ（,）で繋げてください。",
            {"train": (r"niilc-ecqa2015_dev\.xml$",), "test": (r"niilc-ecqa2015_test\.xml$",)},
            ("test",), _niilc, source="NIILC-ECQA2015_dev.xml + _test.xml"),
    Dataset("jsquad", "RC", ("char_f1",), 25,
            "質問に対する回答を文章から一言で抽出してください。回答は名詞で答えてください。"
            " それ以外には何も含めないことを厳守してください。",
            _jglue_files("jsquad"), ("test",), _jsquad, source="JGLUE jsquad-v1.1 (SQuAD layout)"),
    Dataset("jcommonsenseqa", "MC", ("exact_match",), 1,
            "質問と回答の選択肢を入力として受け取り、選択肢から回答を選択してください。"
            "なお、回答は選択肢の番号（例：0）でするものとします。 "
            "回答となる数値をint型で返し、他には何も含めないことを厳守してください。",
            _jglue_files("jcommonsenseqa"), ("test",), _jglue_builder(_jcqa_sample),
            source="JGLUE jcommonsenseqa-v1.1 train/valid JSON lines"),
    Dataset("jmmlu", "HE", ("exact_match",), 1,
            "与えられた質問と選択肢から、最も適切な回答を選択してください。"
            "なお、回答には選択肢のアルファベット（例：A）のみを含め、他には何も含めないことを厳守してください。",
            {"csv": (r"jmmlu/(?:jmmlu_)?[a-z_]+\.csv$",)}, ("csv",), _jmmlu,
            source="JMMLU/<subject>.csv (headerless, BOM)"),
    Dataset("mmlu_en", "HE", ("exact_match",), 1,
            "Please input a question along with multiple-choice answers, and select an answer "
            "from the choices provided. Note that the answer should be indicated by the letter "
            "of the choice (e.g., A) in str format. Return the letter that represents the answer "
            "in str format and ensure that nothing else is included.",
            {"train": (r"data/dev/[a-z_]+_dev\.csv$",), "dev": (r"data/val/[a-z_]+_val\.csv$",),
             "test": (r"data/test/[a-z_]+_test\.csv$",)}, ("test",), _mmlu_en,
            source="Hendrycks data/{dev,val,test}/*.csv (headerless)"),
    Dataset("chabsa", "EL", ("set_f1",), 191,
            "与えられた文章から固有表現で書かれたターゲットの名前を抽出し、それに対する極性をpositive、"
            "neutral、negativeの中から選択して下さい。固有表現で書かれたターゲットの名前と、それに対する極性"
            "（positive、neutral、negativeのいずれか）のペアをスペース（ ）で区切って出力し、"
            "それ以外には何も含めないことを厳守してください。答えが複数の場合、改行で繋げてください。"
            "ただし、ターゲットは固有表現である市場、市況、会社/法人、グループ、会社内の部門、事業部、事業領域、"
            "製品、サービスの名称などを指すこととします。",
            {"json": (r"chabsa-dataset/[^/]+\.json$",)}, ("json",), _chabsa,
            source="chABSA-dataset/*.json"),
    Dataset("wiki_reading", "FA", ("char_f1",), 512, None, source="preprocessed only"),
    Dataset("wiki_ner", "FA", ("set_f1",), 256, None, source="preprocessed only"),
    Dataset("wiki_dependency", "FA", ("set_f1",), 512, None, source="preprocessed only"),
    Dataset("wiki_pas", "FA", ("set_f1",), 512, None, source="preprocessed only"),
    Dataset("wiki_coreference", "FA", ("set_f1",), 256, None, source="preprocessed only"),
    Dataset("mawps", "MR", ("exact_match",), 10,
            "与えられた計算問題に対する答えを整数または小数で出力してください。"
            "数値のみを出力し、それ以外には何も含めないことを厳守してください。",
            {"zero_shot": (r"mawps/zero_shot_example\.json$",),
             "shot": (r"mawps/shot_example\.json$",), "test": (r"mawps/test\.json$",)},
            ("zero_shot", "shot", "test"), _mawps,
            source="mawps/zero_shot_example.json, shot_example.json, test.json"),
    Dataset("alt-e-to-j", "MT", ("bleu_ja",), 250, _MT_JA, source="preprocessed only"),
    Dataset("alt-j-to-e", "MT", ("bleu_en",), 500, _MT_EN, lang="en", source="preprocessed only"),
    Dataset("wikicorpus-e-to-j", "MT", ("bleu_ja",), 300, _MT_JA, source="preprocessed only"),
    Dataset("wikicorpus-j-to-e", "MT", ("bleu_en",), 550, _MT_EN, lang="en",
            source="preprocessed only"),
    Dataset("jsts", None, ("pearson", "spearman"), 3,
            "日本語の文ペアの意味がどのくらい近いかを判定し、類似度を0.0〜5.0までの間の値で付与してください。"
            "0.0に近いほど文ペアの意味が異なり、5.0に近いほど文ペアの意味が似ていることを表しています。"
            "整数値のみを返し、それ以外には何も含めないことを厳守してください。",
            _jglue_files("jsts"), ("test",), _jglue_builder(_jsts_sample),
            source="JGLUE jsts-v1.1 train/valid JSON lines"),
)}

# v1.3's preprocessed file name for a dataset (mmlu_en is "mmluen" there)
PREPROCESSED_NAME = {"mmlu_en": "mmluen"}


# ---------------------------------------------------------------- finding files


def list_files(data: str | Path) -> list[Path]:
    """A file, or every file under a folder (recursively, sorted)."""
    path = Path(data).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError("no such file or folder", where=str(path))
    return sorted(p for p in path.rglob("*") if p.is_file())


def _preprocessed_patterns(ds: Dataset) -> dict[str, tuple[str, ...]]:
    stem = re.escape(PREPROCESSED_NAME.get(ds.name, ds.name))
    return {f"pre_{r}": (rf"(^|/){r}/{stem}\.json$",) for r in ("train", "dev", "test")}


def _match(files: list[Path], patterns: dict[str, tuple[str, ...]]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for role, regexes in patterns.items():
        for regex in regexes:  # the first pattern that matches wins
            hits = [p for p in files if re.search(regex, p.as_posix().lower())]
            if hits:
                found[role] = hits
                break
    return found


def locate(ds: Dataset, files: list[Path]) -> tuple[str, dict[str, list[Path]]] | None:
    """``("preprocessed" | "native", files by role)`` for ``ds``, or None when absent."""
    pre = _match(files, _preprocessed_patterns(ds))
    if "pre_test" in pre:
        return "preprocessed", pre
    if ds.build is None:
        return None
    native = _match(files, ds.files)
    if ds.name == "jmmlu" and "csv" in native:
        native["csv"] = [p for p in native["csv"]
                         if p.stem.removeprefix("jmmlu_") in JMMLU_FILES]
    if ds.name == "jsem" and "xml" in native:
        native["xml"] = [p for p in native["xml"] if p.stem in JSEM_FILES]
    if all(native.get(role) for role in ds.required):
        return "native", native
    return None


def load_dataset(ds: Dataset, files: list[Path]) -> Splits | None:
    """The dataset's splits from ``files`` (None when its files are not there)."""
    found = locate(ds, files)
    if found is None:
        return None
    kind, by_role = found
    try:
        splits = read_preprocessed(by_role) if kind == "preprocessed" else ds.build(by_role)
    except (KeyError, IndexError, ValueError, ET.ParseError, json.JSONDecodeError) as err:
        where = ", ".join(str(p) for paths in by_role.values() for p in paths[:1])
        raise UserError(f"llm-jp-eval {ds.name}: cannot read its {kind} files "
                        f"({type(err).__name__}: {err}); expected {ds.source or 'its native shape'}",
                        where=where) from None
    splits.sources = sorted({str(p) for paths in by_role.values() for p in paths})[:5]
    if not splits.train:
        pool = splits.dev or splits.test
        splits.fewshot_note = ("no train split here: few-shot examples are the first items of "
                               + ("the dev split" if splits.dev else "the test split (the item "
                                  "itself excluded)"))
        splits.train = [] if pool is splits.test else list(pool)
    return splits
