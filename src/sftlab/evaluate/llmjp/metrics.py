"""llm-jp-eval v1.3's metrics, on the same strings, with the same quirks.

Every function takes predictions and golds as llm-jp-eval holds them (both already
NFKC-normalised, see :func:`normalise`) and returns a score in [0, 1] (BLEU: 0-100),
as ``utils.get_evaluation_result`` computes it:

- ``exact_match``: mean of ``pred == gold``;
- ``char_f1``: mean of fuzzywuzzy's ``token_sort_ratio(pred, gold) / 100`` as it
  behaves with python-Levenshtein installed: both strings lose the characters
  U+0080-U+00FF (``force_ascii``), every non-word character becomes a space, they are
  lower-cased and stripped, their whitespace tokens are sorted and joined by one
  space; two equal results score 100 (two strings that both become empty too), one
  empty result scores 0, anything else ``round(100 * Indel similarity)`` (Python's
  round, half to even). The similarity is rapidfuzz's Indel normalised similarity,
  which is what ``Levenshtein.ratio`` computes;
- ``set_f1``: the prediction's distinct stripped lines against the gold's stripped
  lines (a list, duplicates kept): P = hits / |pred set|, R = hits / |gold lines|;
- ``pearson`` / ``spearman``: scipy over the whole dataset; a prediction keeps only
  ``[0-9.]`` and becomes ``-2.0`` when that does not parse; a NaN result is 0;
- ``bleu_ja`` / ``bleu_en``: per item ``BLEU(effective_order=True)`` (``trg_lang="ja"``
  and so the ja-mecab tokenizer for Japanese targets) ``.corpus_score(pred, [gold])``
  with *bare strings*, then the mean (an empty prediction: see :func:`bleu_item`). Bare strings make sacrebleu iterate characters: each
  character is a "sentence" aligned with the gold's character at the same position,
  so the score is a character-position corpus BLEU, not sentence BLEU (the known
  quirk: 68.75 where sentence BLEU gives 48.89). :func:`sentence_bleu` is the
  ordinary sentence BLEU, reported beside it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

_NON_WORD = re.compile(r"(?ui)\W")
_LATIN1 = dict.fromkeys(range(128, 256))
_NOT_NUMBER = re.compile(r"[^0-9.]")


def normalise(text: str) -> str:
    """A prediction as llm-jp-eval v1.3 compares it: NFKC of the text before the first
    blank line (not stripped: swallow's copy adds ``.strip()``, v1.3 does not)."""
    return unicodedata.normalize("NFKC", text.split("\n\n")[0])


def normalise_gold(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def exact_match(pred: str, gold: str) -> float:
    return 1.0 if pred == gold else 0.0


def _fuzz_process(text: str) -> str:
    """fuzzywuzzy's ``full_process(s, force_ascii=True)`` then ``_process_and_sort``."""
    text = text.translate(_LATIN1)
    text = _NON_WORD.sub(" ", text).lower().strip()
    return " ".join(sorted(text.split())).strip()


def token_sort_ratio(a: str, b: str) -> int:
    """fuzzywuzzy ``fuzz.token_sort_ratio`` (0-100) with python-Levenshtein semantics."""
    from rapidfuzz.distance import Indel

    a, b = _fuzz_process(a), _fuzz_process(b)
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * Indel.normalized_similarity(a, b)))


def char_f1(pred: str, gold: str) -> float:
    return token_sort_ratio(pred, gold) / 100.0


def set_f1(pred: str, gold: str) -> float:
    golds = [x.strip() for x in gold.split("\n")]
    preds = list({x.strip() for x in pred.split("\n")})
    hits = sum(1 for y in preds if y in golds)
    precision = hits / len(preds)
    recall = hits / len(golds)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def parse_float(text: str) -> float:
    """A prediction as a number the v1.3 way: keep ``[0-9.]``, else -2.0."""
    try:
        return float(_NOT_NUMBER.sub("", str(text)))
    except ValueError:
        return -2.0


def correlation(kind: str, preds: Sequence[str], golds: Sequence[str]) -> float:
    """Pearson or Spearman correlation over a dataset (NaN -> 0.0)."""
    from scipy.stats import pearsonr, spearmanr

    fn = pearsonr if kind == "pearson" else spearmanr
    if len(preds) < 2:
        return 0.0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input warns and gives NaN
        value = float(fn([float(g) for g in golds], [parse_float(p) for p in preds])[0])
    return 0.0 if math.isnan(value) else value


def _bleu(lang: str):
    from sacrebleu.metrics import BLEU

    return BLEU(trg_lang="ja", effective_order=True) if lang == "ja" else BLEU(effective_order=True)


def bleu_item(pred: str, gold: str, lang: str) -> float:
    """One item's BLEU exactly as v1.3 computes it (bare strings: see the module docs).

    v1.3 raises on an empty prediction (sacrebleu indexes an empty string); sftlab
    scores it 100 when the gold is empty too and 0 otherwise."""
    if not pred or not gold:
        return 100.0 if pred == gold else 0.0
    return float(_bleu(lang).corpus_score(pred, [gold]).score)


def sentence_bleu(pred: str, gold: str, lang: str) -> float:
    """Ordinary sentence BLEU (the strings as one sentence each), for comparison."""
    pred, gold = pred.strip(), gold.strip()
    if not pred or not gold:
        return float(pred == gold) * 100.0
    return float(_bleu(lang).corpus_score([pred], [[gold]]).score)


ITEM_METRICS = {"exact_match": exact_match, "char_f1": char_f1, "set_f1": set_f1}
CORPUS_METRICS = ("pearson", "spearman")
BLEU_METRICS = ("bleu_ja", "bleu_en")
