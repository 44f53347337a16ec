"""One loader per native dataset shape: raw rows -> (instruction, response) pairs.

Native shapes (the ``format`` of a dataset in the study):

==================  ===========================================================
``alpaca``          ``instruction``, ``input``, ``output``
``alpaca_history``  LLaMA-Factory's Alpaca with ``history: [[user, assistant], ...]``
                    (the earlier turns; ``instruction``/``output`` is the last one)
``lima``            ``conversations: [user, assistant, user, ...]`` (strings)
``ultrachat``       ``data: [user, assistant, ...]``, or ``messages: [{role, content}]``
``sharegpt``        ``conversations: [{from: human|gpt|system, value}]``
``messages``        ``messages: [{role: user|assistant|system, content}]``
``magicoder``       ``problem``, ``solution``
``openmathinstruct````question``, ``generated_solution``, ``is_correct`` (correct only)
``mathinstruct``    ``instruction``, ``output``
``flan``            ``inputs``, ``targets``, ``task`` / ``task_name`` (category filter)
``ichikara``        ichikara-instruction: ``ID``, ``text``, ``output`` (``meta`` ignored)
``answercarefully`` AnswerCarefully: ``ID``, ``text``, ``output`` (``meta`` ignored)
``jaster``          llm-jp-eval's train splits: ``path`` is a folder of the datasets'
                    native files (as ``sftlab eval --task llm-jp-eval --data`` reads
                    them); each train sample becomes v1.3's zero-shot prompt
                    (instruction) and its gold (response); ``jaster_datasets`` picks
                    datasets (default: every one found)
``json`` ...        generic local files mapped with ``fields``
==================  ===========================================================

Rules every loader follows:

- Alpaca's ``input`` (and a ``fields.input``) is joined to the instruction as
  ``instruction + "\\n\\n" + input`` when non-empty.
- ``fields`` values are a column name, or a format string over columns
  (``"{rationale} The answer is {answer}."``). Non-conversation native formats
  accept ``fields`` too, overriding their default columns.
- Multi-turn sources: ``multi_turn: first`` (default) keeps the first exchange;
  ``all`` makes one example per exchange whose instruction is the conversation so
  far (earlier turns and the current user turn, separated by blank lines). A system
  message is put before the first user turn, separated by a blank line. An
  unanswered last user turn is ignored.
- A missing or null field, a non-text value, or a malformed conversation is a bad
  row (:class:`~sftlab.data.records.BadRow`); an empty string is kept as it is.
- Rows that a format's own rule leaves out (OpenMathInstruct's incorrect
  solutions, FLAN tasks outside the category) are counted as ``filtered``.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sftlab.data.flan import task_matcher
from sftlab.data.readers import iter_rows
from sftlab.data.records import BadRow, Example, join_input
from sftlab.errors import UserError
from sftlab.study.spec import GENERIC_FORMATS, DatasetSpec, FieldMap

Pair = tuple[str, str]
Converter = Callable[[dict], list[Pair]]
MAX_LISTED_BAD_ROWS = 10
CONVERSATION_FORMATS = ("alpaca_history", "lima", "ultrachat", "sharegpt", "messages")
DEFAULT_FIELDS = {
    "alpaca": FieldMap(instruction="instruction", input="input", response="output"),
    "magicoder": FieldMap(instruction="problem", response="solution"),
    "openmathinstruct": FieldMap(instruction="question", response="generated_solution"),
    "mathinstruct": FieldMap(instruction="instruction", response="output"),
    "flan": FieldMap(instruction="inputs", response="targets"),
    "ichikara": FieldMap(instruction="text", response="output"),
    "answercarefully": FieldMap(instruction="text", response="output"),
    "synth": FieldMap(instruction="instruction", response="response"),  # sftlab.synth rows
}
_USER, _ASSISTANT, _SYSTEM = "user", "assistant", "system"
_SHAREGPT_ROLES = {"human": _USER, "user": _USER, "gpt": _ASSISTANT, "assistant": _ASSISTANT,
                   "chatgpt": _ASSISTANT, "bard": _ASSISTANT, "bing": _ASSISTANT,
                   "model": _ASSISTANT, "system": _SYSTEM}
_OPTIONAL_COLUMNS = {"input"}  # Alpaca rows may omit ``input``


@dataclass
class LoadedSource:
    """A source's examples in file order, with the counts of what was left out."""

    examples: list[Example] = field(default_factory=list)
    read: int = 0
    bad: int = 0
    filtered: int = 0
    bad_rows: list[str] = field(default_factory=list)  # the first few, "where: why"


def load_source(spec: DatasetSpec, path: str, *, where: str) -> LoadedSource:
    """Read every row of ``spec`` from ``path`` (resolved) and normalise it.

    Raises ``UserError`` listing the first bad rows unless ``on_bad_rows: skip``.
    ``where`` names the dataset in messages (``datasets[2] (lima)``).
    """
    if spec.format == "jaster":
        return load_jaster(spec, path, where=where)
    convert = converter(spec, where=where)
    kind = spec.format if spec.format in GENERIC_FORMATS else None
    out = LoadedSource()
    rows = iter_rows(path, kind=kind, columns=spec.columns, split=spec.split, subset=spec.subset)
    for index, (row_where, row) in enumerate(_located(rows, where)):
        out.read += 1
        try:
            if isinstance(row, BadRow):
                raise row
            pairs = convert(row)
        except BadRow as bad:
            out.bad += 1
            if len(out.bad_rows) < MAX_LISTED_BAD_ROWS:
                out.bad_rows.append(f"{row_where}: {bad}")
            continue
        if not pairs:
            out.filtered += 1
        for turn, (instruction, response) in enumerate(pairs):
            ident = f"{spec.name}/{index}" + (f".{turn}" if len(pairs) > 1 else "")
            out.examples.append(Example(ident, spec.name, instruction, response))
    _check_bad_rows(spec, out, where)
    return out


def load_jaster(spec: DatasetSpec, path: str, *, where: str) -> LoadedSource:
    """llm-jp-eval train splits as instruction data, with v1.3's prompt (zero-shot):
    instruction = the prompt up to ``### 応答:\n``, response = the gold."""
    from sftlab.evaluate.llmjp.datasets import DATASETS, build_prompt, list_files, load_dataset

    files = list_files(path)
    out = LoadedSource()
    for name in spec.jaster_datasets or list(DATASETS):
        ds = DATASETS[name]
        splits = load_dataset(ds, files)
        if splits is None or splits.fewshot_note:  # absent, or no train split of its own
            continue
        instruction = splits.instruction or ds.instruction
        for i, sample in enumerate(splits.train):
            out.read += 1
            out.examples.append(Example(f"{spec.name}/{name}/{i}", spec.name,
                                        build_prompt(instruction, [], sample.input),
                                        sample.output))
    if not out.examples:
        raise UserError("jaster: no llm-jp-eval train split found in this folder", where=where)
    return out


def _located(rows: Iterator, where: str) -> Iterator:
    """``rows``, with a whole-file problem (empty, not UTF-8, ...) also naming the dataset."""
    try:
        yield from rows
    except UserError as err:
        if err.where is not None:
            raise
        raise UserError(err.problems, where=where) from None


def _check_bad_rows(spec: DatasetSpec, out: LoadedSource, where: str) -> None:
    if out.bad and spec.on_bad_rows == "error":
        more = out.bad - len(out.bad_rows)
        tail = [f"... and {more} more bad row(s)"] if more else []
        raise UserError(out.bad_rows + tail, where=f"{where} ({out.bad} bad row(s); "
                        "`on_bad_rows: skip` counts and skips them)")


def converter(spec: DatasetSpec, *, where: str = "dataset") -> Converter:
    """The function turning one raw row of ``spec``'s format into example pairs."""
    fmt = spec.format
    if fmt in CONVERSATION_FORMATS:
        if spec.fields is not None:
            raise UserError(f"{where}.fields: format '{fmt}' is a conversation format; "
                            "`fields` applies to flat formats only")
        turns_of = _TURN_READERS[fmt]
        return lambda row: exchanges(turns_of(row), spec.multi_turn)
    mapping = spec.fields or DEFAULT_FIELDS[fmt]
    pick = compile_fields(mapping, where=f"{where}.fields")
    if fmt == "openmathinstruct":
        return lambda row: [pick(row)] if _is_correct(row) else []
    if fmt == "flan":
        keep = task_matcher(spec.flan_category, spec.flan_tasks)
        if keep is None:
            return lambda row: [pick(row)]
        return lambda row: [pick(row)] if keep(_flan_task(row)) else []
    return lambda row: [pick(row)]


# --- flat rows: fields ---------------------------------------------------------------


def compile_fields(mapping: FieldMap, *, where: str) -> Callable[[dict], Pair]:
    """``row -> (instruction, response)`` for a field map; bad templates raise UserError."""
    instruction = _field_getter(mapping.instruction, "instruction", where)
    response = _field_getter(mapping.response, "response", where)
    input_ = _field_getter(mapping.input, "input", where) if mapping.input else None

    def pick(row: dict) -> Pair:
        extra = input_(row) if input_ else None
        return join_input(instruction(row), extra), response(row)

    return pick


def _field_getter(value: str, name: str, where: str) -> Callable[[dict], str | None]:
    if "{" not in value and "}" not in value:
        optional = name == "input" and value in _OPTIONAL_COLUMNS
        return lambda row: _text(row, value, name, optional=optional)
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value)
                  if f is not None]
    except ValueError as err:
        raise UserError(f"{where}.{name}: cannot parse '{value}' as a format string ({err}); "
                        "write literal braces as '{{' and '}}'") from None
    columns = [f for f, _, _ in parsed]
    if any(spec or conv for _, spec, conv in parsed):
        raise UserError(f"{where}.{name}: '{value}': only plain placeholders like '{{answer}}' "
                        "are allowed (no format spec such as ':.2' or conversion such as '!r')")
    if not columns or any(c == "" or c.isdigit() or "." in c or "[" in c for c in columns):
        raise UserError(f"{where}.{name}: '{value}' must name columns like '{{answer}}'")

    def render(row: dict) -> str:
        values = {c: _text(row, c, name) for c in columns}
        return value.format_map(values)

    return render


def _text(row: dict, column: str, name: str, *, optional: bool = False) -> str | None:
    if column not in row:
        if optional:
            return None
        raise BadRow(f"missing field '{column}' (for {name}); the row has: "
                     f"{', '.join(map(str, row)) or 'no fields'}")
    value = row[column]
    if value is None:
        if optional:
            return None
        raise BadRow(f"field '{column}' (for {name}) is null")
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise BadRow(f"field '{column}' (for {name}) is a {type(value).__name__}, expected text")


def _is_correct(row: dict) -> bool:
    if "is_correct" not in row:
        raise BadRow("missing field 'is_correct'")
    value = row["is_correct"]
    if not isinstance(value, bool):
        raise BadRow(f"field 'is_correct' is {value!r}, expected true or false")
    return value


def _flan_task(row: dict) -> str:
    for key in ("task", "task_name", "_task_name"):
        if isinstance(row.get(key), str):
            return row[key]
    raise BadRow("missing field 'task' (or 'task_name'), needed by the FLAN category filter")


# --- conversations ------------------------------------------------------------------


def exchanges(turns: list[tuple[str, str]], mode: str) -> list[Pair]:
    """(instruction, response) pairs of a conversation; see the module docstring."""
    system = [text for role, text in turns[:1] if role == _SYSTEM]
    body = turns[len(system):]
    for i, (role, _) in enumerate(body):
        expected = _USER if i % 2 == 0 else _ASSISTANT
        if role != expected:
            raise BadRow(f"turn {i + len(system)}: expected a {expected} turn, found {role}")
    if len(body) % 2:
        body = body[:-1]  # an unanswered last user turn
    if not body:
        raise BadRow("no complete (user, assistant) exchange in the conversation")
    context: list[str] = list(system)
    pairs = []
    for i in range(0, len(body), 2):
        user, reply = body[i][1], body[i + 1][1]
        pairs.append(("\n\n".join([*context, user]), reply))
        if mode == "first":
            break
        context += [user, reply]
    return pairs


def _alternating(values: object, key: str) -> list[tuple[str, str]]:
    if not isinstance(values, list):
        raise BadRow(f"field '{key}' must be a list of turns")
    turns = []
    for i, text in enumerate(values):
        if not isinstance(text, str):
            raise BadRow(f"{key}[{i}] is a {type(text).__name__}, expected text")
        turns.append((_USER if i % 2 == 0 else _ASSISTANT, text))
    return turns


def _role_list(values: object, key: str, role_key: str, text_key: str,
               roles: dict[str, str]) -> list[tuple[str, str]]:
    if not isinstance(values, list):
        raise BadRow(f"field '{key}' must be a list of turns")
    turns = []
    for i, turn in enumerate(values):
        if not isinstance(turn, dict) or role_key not in turn or text_key not in turn:
            raise BadRow(f"{key}[{i}] must be an object with '{role_key}' and '{text_key}'")
        role = roles.get(str(turn[role_key]).lower())
        if role is None:
            raise BadRow(f"{key}[{i}].{role_key}: unknown role '{turn[role_key]}' "
                         f"(expected one of: {', '.join(sorted(set(roles)))})")
        if not isinstance(turn[text_key], str):
            raise BadRow(f"{key}[{i}].{text_key} is not text")
        turns.append((role, turn[text_key]))
    return turns


def _need(row: dict, key: str) -> object:
    if key not in row or row[key] is None:
        raise BadRow(f"missing field '{key}'; the row has: {', '.join(map(str, row)) or 'nothing'}")
    return row[key]


def _lima_turns(row: dict) -> list[tuple[str, str]]:
    return _alternating(_need(row, "conversations"), "conversations")


def _ultrachat_turns(row: dict) -> list[tuple[str, str]]:
    if "data" not in row and "messages" in row:  # HuggingFaceH4/ultrachat_200k
        return _messages_turns(row)
    return _alternating(_need(row, "data"), "data")


def _sharegpt_turns(row: dict) -> list[tuple[str, str]]:
    return _role_list(_need(row, "conversations"), "conversations", "from", "value",
                      _SHAREGPT_ROLES)


def _messages_turns(row: dict) -> list[tuple[str, str]]:
    roles = {_USER: _USER, _ASSISTANT: _ASSISTANT, _SYSTEM: _SYSTEM}
    return _role_list(_need(row, "messages"), "messages", "role", "content", roles)


def _alpaca_history_turns(row: dict) -> list[tuple[str, str]]:
    history = row.get("history") or []
    if not isinstance(history, list):
        raise BadRow("field 'history' must be a list of [user, assistant] pairs")
    turns: list[tuple[str, str]] = []
    for i, pair in enumerate(history):
        if (not isinstance(pair, list | tuple) or len(pair) != 2
                or not all(isinstance(t, str) for t in pair)):
            raise BadRow(f"history[{i}] must be a [user, assistant] pair of texts")
        turns += [(_USER, pair[0]), (_ASSISTANT, pair[1])]
    last = join_input(_text(row, "instruction", "instruction"),
                      _text(row, "input", "input", optional=True))
    return [*turns, (_USER, last), (_ASSISTANT, _text(row, "output", "response"))]


_TURN_READERS: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "alpaca_history": _alpaca_history_turns,
    "lima": _lima_turns,
    "ultrachat": _ultrachat_turns,
    "sharegpt": _sharegpt_turns,
    "messages": _messages_turns,
}
