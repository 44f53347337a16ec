"""The llm-jp-eval format: v1.3's prompt, loaders of the native files, metrics equal to
llm-jp-eval's (fuzzywuzzy itself as the reference), categories and AVR, replay."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys

import pytest

from sftlab.evaluate.backends.base import GenerateResult
from sftlab.evaluate.llmjp import metrics as M
from sftlab.evaluate.llmjp.datasets import DATASETS, Sample, build_prompt, list_files, load_dataset
from sftlab.evaluate.tasks.base import TaskContext, get_task
from sftlab.evaluate.tasks.llmjp import averages, category_scores

HEADER = ("以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。"
          "要求を適切に満たす応答を書きなさい。\n\n### 指示:\n")


# ---------------------------------------------------------------- fixtures of the native shapes


def write_native(root):
    """Small files in each dataset's native shape, laid out as in ../shared/data."""
    (root / "jamp").mkdir()
    head = "num\tpremise\thypothesis\tgold_label\ttemplate_num\ttime_format\ttime_span\tcategory\n"
    (root / "jamp/train_all.tsv").write_text(head + "".join(
        f"{i}\t前提{i}\t仮説{i}\t{('entailment', 'neutral')[i % 2]}\t0\tNone\tNone\t現在\n"
        for i in range(20)), encoding="utf-8")
    (root / "jamp/test_2.tsv").write_text(head + "".join(
        f"{i}\tテスト前提{i}\tテスト仮説{i}\tcontradiction\t0\tNone\tNone\t現在\n"
        for i in range(3)), encoding="utf-8")
    (root / "jglue").mkdir()
    with (root / "jglue/jsts_valid_v1.1.json").open("w", encoding="utf-8") as fh:
        for i in range(6):
            fh.write(json.dumps({"sentence_pair_id": str(i), "sentence1": f"文{i}",
                                 "sentence2": f"別{i}", "label": float(i % 5)},
                                ensure_ascii=False) + "\n")
    (root / "jsem").mkdir()
    (root / "jsem/Adverb.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><jsem-dataset>'
        + "".join(f'<problem answer="{a}" jsem_id="A{i}"><p idx="1"><script>花子{i}。</script></p>'
                  f'<p idx="2"><script>太郎{i}。</script></p><h><script>仮説{i}。</script></h>'
                  '<note/></problem>'
                  for i, a in enumerate(["yes", "no", "unacceptable", "unknown", "undef", ""] * 3))
        + "</jsem-dataset>", encoding="utf-8")
    (root / "jmmlu/JMMLU").mkdir(parents=True)
    for subject in ("anatomy", "virology"):
        with (root / f"jmmlu/JMMLU/{subject}.csv").open("w", encoding="utf-8-sig",
                                                        newline="") as fh:
            csv.writer(fh).writerows([f"{subject}問{i}", "a,\n1", "b", "c", " d", "ABCD"[i % 4]]
                                     for i in range(40))
    (root / "chABSA-dataset").mkdir()
    (root / "chABSA-dataset/e00001_ann.json").write_text(json.dumps({
        "header": {"document_id": "E00001"},
        "sentences": [{"sentence_id": i, "sentence": f"売上{i}が増加",
                       "opinions": ([{"target": f"売上{i}", "category": "NULL#general",
                                      "polarity": "positive", "from": 0, "to": 2}]
                                    if i % 3 else [])} for i in range(30)]},
        ensure_ascii=False), encoding="utf-8")
    (root / "evaluation/test").mkdir(parents=True)
    (root / "evaluation/test/alt-e-to-j.json").write_text(json.dumps({
        "instruction": "翻訳して", "output_length": 250, "metrics": ["bleu_ja"],
        "few_shots": [], "samples": [{"input": "It is sunny today.", "output": "今日は晴れです"},
                                     {"input": "Hello.", "output": "こんにちは"}]},
        ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture
def native(tmp_path):
    return write_native(tmp_path)


class EchoGold:
    """A backend that answers every prompt with its gold (looked up by the input)."""

    def __init__(self, answers: dict[str, str], suffix: str = "\n\n### 入力:\nmore"):
        self.answers, self.suffix, self.requests = answers, suffix, []

    def generate(self, requests):
        self.requests += requests
        out = []
        for r in requests:
            text = r.prompt.rsplit("### 入力:\n", 1)[1].split("\n\n### 応答:")[0]
            out.append(GenerateResult([self.answers.get(text, "わからない") + self.suffix]))
        return out


# ---------------------------------------------------------------- prompt


def test_prompt_is_v13s_template_with_shots():
    shots = [Sample("入力1", "出力1"), Sample("入力2", "出力2")]
    assert build_prompt("指示文", [], "問題") == HEADER + "指示文\n\n### 入力:\n問題\n\n### 応答:\n"
    assert build_prompt("指示文", shots, "問題") == (
        HEADER + "指示文\n\n### 入力:\n入力1\n\n### 応答:\n出力1\n\n### 入力:\n入力2\n\n### 応答:\n出力2"
        "\n\n### 入力:\n問題\n\n### 応答:\n")


def test_dataset_task_uses_first_k_train_samples_and_output_length(native):
    task = get_task("jamp")
    ctx = TaskContext(shots=2, format="llm-jp-eval", data=str(native / "jamp"))
    task.preflight(ctx)
    prepared = task._prepared(ctx)
    train = load_dataset(DATASETS["jamp"], list_files(native / "jamp")).train
    assert prepared.prompts[0] == build_prompt(DATASETS["jamp"].instruction, train[:2],
                                               "前提：テスト前提0\n仮説：テスト仮説0")
    assert prepared.max_new_tokens == 3
    backend = EchoGold({"前提：テスト前提0\n仮説：テスト仮説0": "contradiction"})
    out = task.run(backend, ctx)
    assert backend.requests[0].max_new_tokens == 3 and backend.requests[0].temperature == 0.0
    assert out.metric == "exact_match" and out.n == 3
    assert [r["outcome"] for r in out.rows] == ["pass", "fail", "fail"]
    assert out.value == pytest.approx(100 / 3)


# ---------------------------------------------------------------- loaders


def test_splits_follow_v13_seeded_shuffles(native):
    files = list_files(native)
    jamp = load_dataset(DATASETS["jamp"], files)
    rows = [Sample(f"前提：前提{i}\n仮説：仮説{i}", ("entailment", "neutral")[i % 2]) for i in range(20)]
    random.seed(42)
    random.shuffle(rows)
    assert (jamp.train, jamp.dev) == (rows[:18], rows[18:])
    assert [s.input for s in jamp.test][0] == "前提：テスト前提0\n仮説：テスト仮説0"
    jsem = load_dataset(DATASETS["jsem"], files)
    kept = len(jsem.train) + len(jsem.dev) + len(jsem.test)
    assert kept == 12  # unacceptable and "" dropped; premises joined
    assert {s.input.split("\n")[0] for s in jsem.test} <= {f"前提：花子{i}。太郎{i}。" for i in range(18)}
    jmmlu = load_dataset(DATASETS["jmmlu"], files)
    assert len(jmmlu.train) == 32 and len(jmmlu.dev) + len(jmmlu.test) == 80 - 32
    assert jmmlu.test[0].input.startswith("質問：") and ",B.b,C.c,D. d" in jmmlu.test[0].input
    chabsa = load_dataset(DATASETS["chabsa"], files)
    assert len(chabsa.train) + len(chabsa.dev) + len(chabsa.test) == 20
    assert all(s.output.endswith(" positive") for s in chabsa.test)
    jsts = load_dataset(DATASETS["jsts"], files)
    assert jsts.test[1] == Sample("文1：文1\n文2：別1", "1.0") and jsts.fewshot_note


def test_missing_files_are_a_clear_error(native):
    from sftlab.errors import UserError

    with pytest.raises(UserError, match="jnli: its files are not in the data"):
        get_task("jnli").preflight(TaskContext(shots=0, format="llm-jp-eval", data=str(native)))
    with pytest.raises(UserError, match="unknown format 'opencompass'"):
        get_task("jamp").check(TaskContext(shots=0, format="opencompass"))


# ---------------------------------------------------------------- metrics


def _random_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    alphabet = list("あいうえお日本語東京テスト株式会社abcXYZ 123。、！？éÀñß-_.,\n\t　")
    pairs = []
    for _ in range(n):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        b = a if rng.random() < 0.15 else "".join(rng.choice(alphabet)
                                                   for _ in range(rng.randint(0, 14)))
        pairs.append((a, b))
    return pairs


def test_char_f1_equals_fuzzywuzzy_token_sort_ratio():
    fuzz = pytest.importorskip("fuzzywuzzy.fuzz")
    pytest.importorskip("Levenshtein")  # fuzzywuzzy's fast path, which llm-jp-eval installs
    pairs = _random_pairs(5000) + [("東京都", "東京"), ("¡hola!", "hola"), ("。", "！"),
                                   ("4年", "4年に1度"), ("", ""), ("a b", "b a")]
    assert [M.token_sort_ratio(a, b) for a, b in pairs] == [fuzz.token_sort_ratio(a, b)
                                                            for a, b in pairs]
    assert M.char_f1("。", "！") == 1.0  # both empty after processing: fuzzywuzzy says 100


def test_set_f1_exact_match_and_correlations_follow_v13():
    assert M.set_f1("売上 positive\n売上 positive\n利益 negative", "売上 positive\n費用 neutral") \
        == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    assert M.set_f1("x", "y") == 0.0
    assert M.parse_float("類似度は3.5です") == 3.5 and M.parse_float("わからない") == -2.0
    from scipy.stats import pearsonr, spearmanr

    golds, preds = ["0.0", "1.2", "3.0", "4.8"], ["0", "1点", "だめ", "5.0"]
    assert M.correlation("pearson", preds, golds) == pytest.approx(
        pearsonr([0, 1.2, 3, 4.8], [0, 1, -2, 5])[0])
    assert M.correlation("spearman", preds, golds) == pytest.approx(
        spearmanr([0, 1.2, 3, 4.8], [0, 1, -2, 5])[0])
    assert M.correlation("pearson", ["1", "1", "1"], ["0", "1", "2"]) == 0.0  # NaN -> 0


def test_bleu_is_v13s_bare_string_corpus_score():
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu.metrics import BLEU

    pred, gold = "今日は晴れです", "今日は雨です"
    assert M.bleu_item(pred, gold, "ja") == pytest.approx(
        BLEU(trg_lang="ja", effective_order=True).corpus_score(pred, [gold]).score)
    assert M.sentence_bleu(pred, gold, "ja") != pytest.approx(M.bleu_item(pred, gold, "ja"))
    assert M.bleu_item("", "x", "en") == 0.0 and sacrebleu


def test_normalise_is_nfkc_of_text_before_first_blank_line():
    assert M.normalise("ＡＢＣ１\n\n余計") == "ABC1"
    assert M.normalise_gold("ｎｅｕｔｒａｌ") == "neutral"


# ---------------------------------------------------------------- suite, categories, AVR


def test_categories_are_means_and_missing_is_not_zero():
    cats = category_scores({"jamp": 50.0, "jsick": 70.0, "jemhopqa": 40.0, "jsts": 90.0})
    assert cats["NLI"] == 60.0 and cats["QA"] == 40.0 and cats["RC"] is None
    avr, v13 = averages(cats)
    assert avr == 50.0 and v13 == pytest.approx(100 / 9)


def test_suite_gold_replay_scores_100_and_reports_categories(native, tmp_path):
    from sftlab.evaluate.runner import TaskRequest, score_predictions

    names = ["jamp", "jsem", "jmmlu", "chabsa", "alt-e-to-j", "jsts"]
    files = list_files(native)
    preds = tmp_path / "preds.jsonl"
    with preds.open("w", encoding="utf-8") as fh:
        for name in names:
            for i, s in enumerate(load_dataset(DATASETS[name], files).test):
                fh.write(json.dumps({"id": f"{name}/{i}", "output": s.output + "\n\n余計"},
                                    ensure_ascii=False) + "\n")
    res = score_predictions(TaskRequest("llm-jp-eval", 4, "llm-jp-eval", str(native)), preds)
    cats = res.extra["categories"]
    assert cats["NLI"] == cats["HE"] == cats["EL"] == 100.0
    assert cats["MT"] == pytest.approx(100.0)
    assert cats["QA"] is None and cats["FA"] is None
    assert res.metric == "AVR" and res.value == pytest.approx(100.0)
    assert res.extra["AVR_v1.3"] == pytest.approx(400 / 9)
    assert res.extra["datasets"]["jsts"]["value"] == pytest.approx(100.0)  # pearson of golds
    rows = res.summaries()
    assert {(r["task"], r["metric"]) for r in rows} >= {
        ("llm-jp-eval", "AVR"), ("llm-jp-eval", "NLI"), ("jamp", "exact_match"),
        ("jsts", "pearson"), ("alt-e-to-j", "bleu_ja"), ("llm-jp-eval", "RC")}
    assert next(r for r in rows if r["metric"] == "RC")["value"] is None


def test_score_cli_json_defaults_to_the_llm_jp_eval_format(native, tmp_path):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": str(i), "output": s.output}, ensure_ascii=False)
                             + "\n" for i, s in enumerate(
                                 load_dataset(DATASETS["jsem"], list_files(native)).test)),
                     encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "sftlab", "score", "--task", "jsem:0",
                           "--data", str(native / "jsem"), "--predictions", str(preds), "--json"],
                          capture_output=True, text=True, check=True)
    [row] = json.loads(proc.stdout)["results"]
    assert (row["task"], row["format"], row["metric"], row["value"]) == (
        "jsem", "llm-jp-eval", "exact_match", 100.0)


# ---------------------------------------------------------------- the real files


@pytest.mark.shared_data
def test_real_files_load_with_v13_sizes(shared_data):
    files = list_files(shared_data)
    sizes = {n: (lambda s: (len(s.train), len(s.dev), len(s.test)))(load_dataset(DATASETS[n], files))
             for n in ("jamp", "janli", "jsem", "jsick", "jemhopqa", "niilc", "jcommonsenseqa",
                       "jmmlu", "jsts", "jnli", "jsquad")}
    assert sizes["jcommonsenseqa"] == (8045, 894, 1119)
    assert sizes["jamp"] == (8955, 995, 348) and sizes["janli"] == (12312, 1368, 720)
    assert sum(sizes["jsem"]) == 15834 and sizes["jsick"][2] == 4927
    assert sizes["jnli"] == (0, 0, 2434) and sizes["jsquad"] == (0, 0, 4442)
    assert sizes["jmmlu"][0] == 32 and sum(sizes["jmmlu"]) == 7097  # JMMLU/ only, not NC_ND
    assert sizes["jemhopqa"] == (953, 106, 120) and sizes["jsts"][2] == 1457


@pytest.mark.shared_data
def test_real_suite_gold_replay(shared_data, tmp_path):
    from sftlab.evaluate.runner import TaskRequest, score_predictions

    files = list_files(shared_data)
    preds = tmp_path / "gold.jsonl"
    with preds.open("w", encoding="utf-8") as fh:
        for name in ("jamp", "janli", "jnli", "jsem", "jsick", "jemhopqa", "niilc", "jsquad",
                     "jcommonsenseqa", "jmmlu", "jsts"):
            for i, s in enumerate(load_dataset(DATASETS[name], files).test[:50]):
                fh.write(json.dumps({"id": f"{name}/{i}", "output": s.output},
                                    ensure_ascii=False) + "\n")
    res = score_predictions(TaskRequest("llm-jp-eval", 4, "llm-jp-eval", str(shared_data),
                                        limit=50), preds)
    cats = res.extra["categories"]
    for code in ("NLI", "QA", "RC", "MC", "HE"):
        assert cats[code] == pytest.approx(100.0), code
    assert {c for c, v in cats.items() if v is None} == {"EL", "FA", "MR", "MT"}
    assert res.value == pytest.approx(100.0)
    assert res.extra["datasets"]["jsts"]["value"] == pytest.approx(100.0)


# ---------------------------------------------------------------- report


def _suite_preds(path, scores_by_dataset):
    with path.open("w", encoding="utf-8") as fh:
        for name, scores in scores_by_dataset.items():
            for i, s in enumerate(scores):
                fh.write(json.dumps({"item_id": f"{name}/{i}", "dataset": name,
                                     "category": DATASETS[name].category, "score": s,
                                     "outcome": "pass" if s else "fail"}) + "\n")
    return str(path)


def test_report_has_the_llm_jp_eval_table_and_category_deltas_with_intervals(tmp_path):
    import pandas as pd

    from sftlab.report import ReportOptions, build_report
    from sftlab.report.items import ItemScores
    from sftlab.report.suites import expand_suites

    base_scores = {"jamp": [0, 0, 1, 0] * 10, "jsick": [0, 1] * 10, "jemhopqa": [0.5] * 8}
    run_scores = {"jamp": [1, 1, 1, 0] * 10, "jsick": [1, 1] * 10, "jemhopqa": [0.75] * 8}
    common = {"setting": "single", "shots": 4, "format": "llm-jp-eval", "metric": "AVR",
              "stderr": None, "task": "llm-jp-eval"}
    rows = [
        {**common, "run_id": "base-m", "model": "m", "method": "base", "setting": "base",
         "datasets": "", "size": 0, "epoch": 0, "value": 0.0, "n": 68, "eval_id": "b",
         "predictions_path": _suite_preds(tmp_path / "b.jsonl", base_scores)},
        {**common, "run_id": "r1", "model": "m", "method": "full", "datasets": "ja", "size": 8,
         "epoch": 1, "value": 0.0, "n": 68, "eval_id": "r",
         "predictions_path": _suite_preds(tmp_path / "r.jsonl", run_scores)},
    ]
    expanded = expand_suites(pd.DataFrame(rows), ItemScores().rows)
    nli = expanded[(expanded["metric"] == "NLI") & (expanded["run_id"] == "r1")]["value"].item()
    assert nli == pytest.approx((75 + 100) / 2)  # mean of dataset means, not of items
    avr_items = ItemScores().scores(expanded[expanded["run_id"] == "r1"]["predictions_path"]
                                    .iloc[0])
    assert 100 * avr_items.mean() == pytest.approx(((75 + 100) / 2 + 75) / 2)  # AVR exactly
    summary = build_report(pd.DataFrame(rows), tmp_path / "report",
                           options=ReportOptions(format="md", resamples=200))
    text = (tmp_path / "report" / "index.md").read_text(encoding="utf-8")
    assert "llm-jp-eval: AVR and categories" in text
    table = (tmp_path / "report" / "tables" / "llm_jp_eval.csv").read_text()
    assert "NLI" in table and "QA" in table
    deltas = pd.read_csv(next(p for p in summary.tables if p.name.startswith("deltas_")
                              and p.suffix == ".csv"))
    nli_delta = deltas[deltas["column"].str.contains(r"\(NLI\)")].iloc[0]
    assert nli_delta["delta"] == pytest.approx((75 + 100) / 2 - (25 + 50) / 2)
    assert nli_delta["low"] > 0  # the interval is computed, and excludes 0 here


# ---------------------------------------------------------------- training data


def test_jaster_turns_train_splits_into_v13_prompts(native):
    from sftlab.data.loaders import load_source
    from sftlab.study.spec import DatasetSpec

    spec = DatasetSpec(name="jaster", format="jaster", path=str(native),
                       jaster_datasets=["jamp", "jsem"])
    loaded = load_source(spec, str(native), where="datasets[0] (jaster)")
    train = load_dataset(DATASETS["jamp"], list_files(native)).train
    first = loaded.examples[0]
    assert first.id == "jaster/jamp/0" and first.response == train[0].output
    assert first.instruction == build_prompt(DATASETS["jamp"].instruction, [], train[0].input)
    assert first.instruction.endswith("### 応答:\n")
    assert {e.id.split("/")[1] for e in loaded.examples} == {"jamp", "jsem"}
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown llm-jp-eval dataset 'jamq'"):
        DatasetSpec(name="j", format="jaster", path="x", jaster_datasets=["jamq"])


@pytest.mark.parametrize("fmt", ["ichikara", "answercarefully"])
def test_ichikara_and_answercarefully_shapes(tmp_path, fmt):
    from sftlab.data.loaders import load_source
    from sftlab.study.spec import DatasetSpec

    rows = [{"ID": f"{fmt}-000-001-{i}", "text": f"質問{i}", "output": f"回答{i}",
             "meta": {"risk-area": "x"} if fmt == "answercarefully" else {"misc": []}}
            for i in range(3)]
    path = tmp_path / f"{fmt}.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    loaded = load_source(DatasetSpec(name="ja", format=fmt, path=str(path)), str(path),
                         where="datasets[0]")
    assert [(e.instruction, e.response) for e in loaded.examples] == [
        (f"質問{i}", f"回答{i}") for i in range(3)]
