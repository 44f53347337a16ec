"""The study file: a typed, validated description of a whole SFT study.

``load_study(path)`` reads YAML, validates every key at once and raises one
:class:`~sftlab.errors.UserError` listing each problem with its key path, its
line in the file, and a suggestion where one fits::

    study.yaml:14: datasets[2].format: unknown format 'alpacca' (did you mean 'alpaca'?)

The models here are the single source of truth for what a study may say; the
README's study-file section documents the same keys.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sftlab.errors import UserError
from sftlab.evaluate.aggregation import SelfAggregation
from sftlab.evaluate.budget import BudgetForcing
from sftlab.evaluate.retrieval import Retrieval
from sftlab.evaluate.tasks.registry import (
    TASKS,
    default_categories,
    formats,
    judge_tasks,
    retrieval_tasks,
)
from sftlab.evaluate.tools import ToolUse
from sftlab.study.template import template_problems

if TYPE_CHECKING:
    from sftlab.methods import MethodConfig

PAPER_TEMPLATE = "###Question: {instruction}\n\n###Answer: {response}"

DATASET_FORMATS = (
    "alpaca",  # instruction / input / output
    "alpaca_history",  # LLaMA-Factory: instruction / input / output / history
    "lima",  # conversations: [user, assistant, ...]
    "ultrachat",  # data: [user, assistant, ...] (alternating turns)
    "sharegpt",  # conversations: [{from, value}]
    "messages",  # messages: [{role, content}]
    "magicoder",  # problem / solution
    "openmathinstruct",  # question / generated_solution / is_correct
    "mathinstruct",  # instruction / output / source
    "flan",  # inputs / targets / task (filtered by category)
    "ichikara",  # ichikara-instruction: ID / text / output / meta
    "answercarefully",  # AnswerCarefully: ID / text / output / meta
    "jaster",  # llm-jp-eval train splits (a folder of their native files), v1.3's prompt
    "json",  # generic local files mapped with `fields`
    "jsonl",
    "csv",
    "tsv",
    "parquet",
    "synth",  # generated: a synth spec file (path) or an inline spec (synth), see sftlab.synth
)
GENERIC_FORMATS = ("json", "jsonl", "csv", "tsv", "parquet")
LINK_FORMATS = ("text",)  # raw text (.txt files, a folder of them, JSON lines with `text`)
SETTINGS = ("single", "all", "leave_one_out")
FLAN_CATEGORIES = ("knowledge", "reasoning", "comprehension")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A base model: a hub id or a local folder."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    path: str
    family: str | None = None  # llama | qwen2 | olmo ...; inferred for --smoke when absent
    revision: str | None = None
    trust_remote_code: bool = False


class FieldMap(_Strict):
    """Maps a source's columns onto the normalised record.

    Each value is a column name, or a format string over columns
    (``"{rationale} The answer is {answer}."``).
    """

    instruction: str
    input: str | None = None
    response: str


class DatasetSpec(_Strict):
    """One instruction dataset (a source) of the study."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    format: str
    path: str | None = None  # local file or folder, or a hub id; required but for synth
    synth: dict[str, Any] | None = None  # format synth: the spec inline (else `path` to it)
    category: str = "general"
    fields: FieldMap | None = None
    columns: list[str] | None = None  # headerless CSV/TSV column names
    split: str = "train"
    subset: str | None = None  # hub config name
    multi_turn: Literal["first", "all"] = "first"
    flan_category: Literal["knowledge", "reasoning", "comprehension"] | None = None
    flan_tasks: list[str] | None = None
    allow_smaller: bool = False
    on_bad_rows: Literal["error", "skip"] = "error"
    jaster_datasets: list[str] | None = None  # jaster: which llm-jp-eval datasets (default all)

    @field_validator("jaster_datasets")
    @classmethod
    def _known_jaster(cls, values: list[str] | None) -> list[str] | None:
        from sftlab.evaluate.llmjp.datasets import DATASETS

        bad = [v for v in values or [] if v not in DATASETS]
        if bad:
            raise ValueError("; ".join(_unknown("llm-jp-eval dataset", v, tuple(DATASETS))
                                       for v in bad))
        return values

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value in LINK_FORMATS:
            raise ValueError(f"format '{value}' is raw text for continued pretraining: give it "
                             "as a method's `data:` (type: cpt), not as a grid dataset")
        if value not in DATASET_FORMATS:
            raise ValueError(_unknown("format", value, DATASET_FORMATS))
        return value

    @field_validator("synth")
    @classmethod
    def _valid_synth(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from sftlab.synth.spec import parse_spec

            try:
                parse_spec(value)
            except UserError as err:
                raise ValueError("; ".join(err.problems)) from None
        return value

    @model_validator(mode="after")
    def _path_or_synth(self) -> DatasetSpec:
        if self.format == "synth" and (self.path is None) == (self.synth is None):
            raise ValueError("format 'synth' needs either `path` (a synth spec file) or "
                             "`synth` (the spec inline)")
        if self.format != "synth" and self.synth is not None:
            raise ValueError("`synth` is only for format 'synth'")
        if self.format != "synth" and self.path is None:
            raise ValueError("`path` is missing (a local file or folder, or a hub id)")
        return self

    @model_validator(mode="after")
    def _fields_for_generic(self) -> DatasetSpec:
        if self.format in GENERIC_FORMATS and self.fields is None:
            raise ValueError(
                f"format '{self.format}' needs `fields` mapping columns onto "
                "instruction / input / response"
            )
        if self.columns is not None and self.format not in ("csv", "tsv"):
            raise ValueError("`columns` is only for headerless csv / tsv files")
        return self


class Grid(_Strict):
    sizes: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    settings: list[str] = Field(default_factory=lambda: ["single"], min_length=1)

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if v not in SETTINGS]
        if bad:
            raise ValueError("; ".join(_unknown("setting", b, SETTINGS) for b in bad))
        return values

    @field_validator("sizes", "methods", "settings")
    @classmethod
    def _no_duplicates(cls, values: list) -> list:
        dupes = sorted({str(v) for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"duplicate entries: {', '.join(dupes)}")
        return values


class LoraSpec(_Strict):
    """LoRA / DoRA adapter settings."""

    r: int = Field(8, gt=0)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                 "polynomial", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay")


class MethodData(DatasetSpec):
    """A method's own data (``methods.<name>.data``): the keys of a ``datasets[]`` item,
    ``name`` optional (defaults to the method's name). All of it is used (no sampling)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:  # a method's data may be raw text
        if value not in (*DATASET_FORMATS, *LINK_FORMATS):
            raise ValueError(_unknown("format", value, (*DATASET_FORMATS, *LINK_FORMATS)))
        return value


class MethodBase(_Strict):
    """What every method type has. Each type (``sftlab.methods``) is a subclass with a
    ``type`` literal; the study's ``methods`` hold one of them each (a discriminated union).

    ``init`` names the method whose final checkpoint (for the same model) this one starts
    from; ``data`` replaces the grid's training sets with the method's own.
    """

    type: str
    init: str | None = None
    data: MethodData | None = None

    #: Fields that do not change the result (left out of the run id).
    EXECUTION_ONLY: ClassVar[tuple[str, ...]] = ()
    #: ``epoch`` (checkpoints ``epoch-<n>``) or ``step`` (``step-<n>``).
    UNIT: ClassVar[str] = "epoch"
    #: Whether it trains on data (the grid's training sets unless it has its own ``data``).
    READS_DATA: ClassVar[bool] = True

    def identity(self) -> dict:
        """What about this method changes its result (the parent and data are keyed apart)."""
        return self.model_dump(exclude={*self.EXECUTION_ONLY, "init", "data"}, mode="json")

    def checkpoints(self) -> list[int]:
        """The checkpoint numbers a run of this method writes; the last is its result."""
        return [1]

    @property
    def unit(self) -> str:
        """What its checkpoints count (:data:`UNIT`; a method may choose per config)."""
        return self.UNIT

    @property
    def weights(self) -> str:
        """What a checkpoint holds: ``full`` weights, or a ``lora`` / ``dora`` adapter."""
        return "full"

    def start_model(self, start: str, root: Path) -> str:
        """The model a run of this method trains from, given the one its chain starts it
        from (``root``: the run's ``ckpt/<run_id>``; a method may derive one there)."""
        return start

    def smoke(self, *, epochs: int, batch_size: int) -> dict:
        """This method's keys, shrunk for ``--smoke``."""
        return self.model_dump()


class TrainedMethod(MethodBase):
    """Hyperparameters shared by the gradient-trained methods. ``batch_size`` is the
    effective batch (all processes, all accumulation steps)."""

    learning_rate: float = Field(gt=0)
    batch_size: int = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(gt=0, le=10_000)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int | None = Field(None, gt=0)  # execution detail, not in the run id
    gradient_checkpointing: bool = False  # execution detail, not in the run id
    lora: LoraSpec | None = None
    trainable: Literal["all", "new"] = "all"  # new: only the layers an `upscale` parent added

    EXECUTION_ONLY: ClassVar[tuple[str, ...]] = ("micro_batch_size", "gradient_checkpointing")

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in LR_SCHEDULERS:
            raise ValueError(_unknown("scheduler", value, LR_SCHEDULERS))
        return value

    @model_validator(mode="after")
    def _new_layers_full(self) -> TrainedMethod:
        if self.trainable == "new" and self.weights != "full":
            raise ValueError("`trainable: new` trains the new layers' full weights; "
                             "it does not combine with an adapter")
        return self

    def identity(self) -> dict:
        data = super().identity()
        if self.weights == "full":
            data.pop("lora", None)
        if self.trainable == "all":
            data.pop("trainable")  # run ids of studies from before the key stay the same
        return data

    def checkpoints(self) -> list[int]:
        return list(range(1, self.epochs + 1))

    @property
    def examples_per_step(self) -> int:
        """Training examples in one optimizer step (GRPO: prompts x completions each)."""
        return self.batch_size

    def smoke(self, *, epochs: int, batch_size: int) -> dict:
        return {**self.model_dump(), "epochs": min(self.epochs, epochs),
                "batch_size": min(self.batch_size, batch_size), "micro_batch_size": None}


class JudgeSpec(_Strict):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "judge"
    api_key_env: str | None = None
    concurrency: int = Field(4, gt=0)
    timeout: float = Field(120, gt=0)
    max_retries: int = Field(5, ge=0)
    max_tokens: int = Field(2048, gt=0)  # a reasoning judge (GPT-OSS) may need more


class BenchmarkSpec(_Strict):
    task: str
    shots: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0])
    # one of the task's formats (task registry); default: the task's first (opencompass)
    format: str | None = Field(None, validate_default=True)  # always a str once validated
    data: str | None = None
    limit: int | None = Field(None, gt=0)
    max_new_tokens: int | None = Field(None, gt=0)  # cap on generated tokens (task default)
    judge: JudgeSpec | None = None
    # opencompass format: the OpenCompass config by name, or "gen" / "ppl" (the first config of
    # that kind for each shot count); None: the reference study's config per shot count
    config: str | None = None
    # repeated sampling (generation tasks; sftlab.evaluate.sampling): n samples per item,
    # pass@K (math, gsm8k: cons@K, maj@K too) for each K in k
    samples: int = Field(1, gt=0)
    temperature: float | None = Field(None, ge=0)  # default 0.8 with samples > 1, else greedy
    top_p: float | None = Field(None, gt=0, le=1)  # default 0.95 with samples > 1
    seed: int | None = None  # default: evaluation.seed
    k: list[Annotated[int, Field(gt=0)]] | None = None  # default 1, 2, 4 ... up to samples
    budget_forcing: BudgetForcing | None = None  # s1 thinking budget (sftlab.evaluate.budget)
    tool_use: ToolUse | None = None  # Python blocks run in the sandbox (sftlab.evaluate.tools)
    # recursive self-aggregation (sftlab.evaluate.aggregation)
    self_aggregation: SelfAggregation | None = None
    # only the checkpoints of these methods' runs (links of a chain included); default:
    # every checkpoint and the base models. Chooses what is evaluated, not how: not in ids.
    methods: list[str] | None = Field(None, min_length=1)
    # few-shot selection: None = the task's own (first k / fixed); "retrieval" = the k most
    # similar pool items by embedding (settings in `retrieval`, sftlab.evaluate.retrieval)
    fewshot: Literal["retrieval"] | None = None
    retrieval: Retrieval | None = None

    def sampling_options(self, shots: int | None = None) -> dict[str, Any]:
        """The task options of the sampling keys (and budget forcing, tool use,
        self-aggregation, few-shot retrieval) that differ from their defaults; at
        ``shots`` 0 retrieval has nothing to choose and is left out."""
        from sftlab.evaluate.sampling import Sampling

        options = Sampling(self.samples, self.temperature, self.top_p, self.seed,
                           tuple(self.k) if self.k else None).to_options()
        if self.budget_forcing is not None:
            options["budget_forcing"] = self.budget_forcing.model_dump()
        if self.tool_use is not None:
            options["tool_use"] = self.tool_use.model_dump()
        if self.self_aggregation is not None:
            options["self_aggregation"] = self.self_aggregation.model_dump()
        if self.retrieval is not None and shots != 0:
            options["retrieval"] = self.retrieval.model_dump()
        return options

    @model_validator(mode="after")
    def _retrieval_settings(self) -> BenchmarkSpec:
        if self.fewshot == "retrieval" and self.retrieval is None:
            raise ValueError("fewshot: retrieval needs its settings: "
                             "retrieval: {embedder: <sentence-transformers folder>}")
        if self.retrieval is not None and self.fewshot != "retrieval":
            raise ValueError("retrieval: settings without `fewshot: retrieval`")
        if self.fewshot == "retrieval" and self.task not in retrieval_tasks():
            raise ValueError(f"fewshot: retrieval is not supported by task {self.task} (tasks "
                             f"with retrieved examples: {', '.join(sorted(retrieval_tasks()))})")
        if self.fewshot == "retrieval" and not any(self.shots):
            raise ValueError("fewshot: retrieval needs a shot count above 0 in `shots`")
        return self

    @model_validator(mode="after")
    def _one_technique(self) -> BenchmarkSpec:
        chosen = [self.budget_forcing, self.tool_use, self.self_aggregation]
        if sum(c is not None for c in chosen) > 1:
            raise ValueError("budget_forcing, tool_use and self_aggregation cannot be combined")
        return self

    @field_validator("k")
    @classmethod
    def _k_within_samples(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        samples = info.data.get("samples", 1)
        if value and max(value) > samples:
            raise ValueError(f"{max(value)} is more than samples ({samples})")
        return value

    @field_validator("shots", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(_unknown("task", value, tuple(TASKS)))
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None, info: ValidationInfo) -> str:
        spec = TASKS.get(info.data.get("task", ""))
        known = spec.formats if spec else formats()
        if value is None:
            return known[0]
        if value not in known:
            raise ValueError(_unknown("value", value, known))
        return value

    @model_validator(mode="after")
    def _known_config(self) -> BenchmarkSpec:
        for shots in self.shots:
            self.config_for(shots)
        return self

    def config_for(self, shots: int) -> str | None:
        """The named config this benchmark runs at ``shots`` (None outside opencompass)."""
        from sftlab.evaluate.tasks.opencompass import FORMAT, resolve_config

        if self.format != FORMAT:
            if self.config is not None:
                raise ValueError(f"config {self.config!r} is only chosen in the {FORMAT} "
                                 f"format, not {self.format}")
            return None
        try:
            return resolve_config(self.task, shots, self.config)
        except UserError as err:
            raise ValueError("; ".join(err.problems)) from None


class EvaluationSpec(_Strict):
    """How checkpoints are evaluated; ``judge`` is the default judge of judge-scored tasks."""

    checkpoints: Literal["every_epoch", "final"] | list[Annotated[int, Field(gt=0)]] = (
        "every_epoch"
    )
    include_base: bool = True
    use_template: bool = True
    # how the template wraps an opencompass prompt: the whole prompt as its {instruction}, or
    # each round wrapped as HUMAN / BOT (OpenCompass's meta template), generation after the cue
    template_mode: Literal["instruction", "rounds"] = "instruction"
    backend: Literal["hf", "vllm", "openai"] = "hf"
    batch_size: int | None = Field(None, gt=0)
    seed: int = 1234
    judge: JudgeSpec | None = None
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)

    def judge_for(self, bench: BenchmarkSpec) -> JudgeSpec | None:
        """The judge of a judge-scored benchmark: its own, else the evaluation default."""
        if bench.task not in judge_tasks():
            return None
        return bench.judge or self.judge or JudgeSpec()


class TrainingSpec(_Strict):
    """Settings shared by every run; none of them may change results (except precision)."""

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    logging_steps: int = Field(10, gt=0)
    group_by_length: bool = True
    attn_implementation: str | None = None  # "flash_attention_2" when installed; auto otherwise
    fsdp: str | None = None  # passed through to transformers' TrainingArguments
    deepspeed: str | None = None  # path to a DeepSpeed JSON config


class ReportSpec(_Strict):
    categories: dict[str, list[str]] = Field(default_factory=lambda: default_categories())
    bootstrap_resamples: int = Field(1000, gt=0)


class Study(_Strict):
    """A whole study, as read from its YAML file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 42
    output_dir: Path | None = None
    template: str = PAPER_TEMPLATE
    max_length: int = Field(2048, gt=0)
    models: list[ModelSpec] = Field(min_length=1)
    datasets: list[DatasetSpec] = Field(min_length=1)
    grid: Grid
    methods: dict[str, MethodConfig]
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    source_path: Path | None = Field(None, exclude=True)

    @field_validator("template")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        problems = template_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _method_types(cls, methods: Any) -> Any:
        """A method's ``type`` defaults to its key; an unknown type is reported here."""
        from sftlab.methods import METHOD_TYPES

        if not isinstance(methods, dict):
            return methods
        out, problems = {}, []
        for key, spec in methods.items():
            if not isinstance(spec, dict):
                out[key] = spec
                continue
            kind = spec.get("type") or key
            if kind not in METHOD_TYPES:
                problems.append(
                    f"{key}: " + _unknown("method type", str(kind), METHOD_TYPES)
                    + (" (set `type:` for a custom method name)" if "type" not in spec else ""))
            out[key] = {**spec, "type": kind}
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @model_validator(mode="after")
    def _cross_checks(self) -> Study:
        problems = _cross_problems(self.model_dump(mode="python"))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def method_type(self, name: str) -> str:
        return self.methods[name].type

    @property
    def out_dir(self) -> Path:
        """Where the study's artefacts go: ``output_dir``, else ``runs/<name>`` (cwd-relative)."""
        return Path(self.output_dir) if self.output_dir is not None else Path("runs") / self.name

    def resolve_model_path(self, path: str) -> str:
        """A model path ready for ``from_pretrained``: ``tiny:<arch>`` is built and a GGUF
        file, ``pkg:`` file or alias converted on first use (:mod:`sftlab.models.sources`);
        a relative local folder or file is found as :meth:`resolve_path` finds data."""
        from sftlab.models.sources import TINY_PREFIX, is_file_source, resolve_model_source

        if path.startswith(TINY_PREFIX):
            return resolve_model_source(path)
        if is_file_source(path):
            return resolve_model_source(self.resolve_path(path))
        return self.resolve_path(path)

    def model_key(self, path: str) -> str:
        """What run ids record for a model path: the path itself, or ``gguf:<sha256>`` of
        the bytes of a model file (GGUF, ``pkg:``, alias), so a changed file is new work."""
        from sftlab.models.sources import is_file_source, source_key

        return source_key(self.resolve_path(path)) if is_file_source(path) else path

    def resolve_path(self, path: str) -> str:
        """A dataset or benchmark path as the study means it.

        ``embedded:<file>`` names the project's generated data; absolute paths stay; a relative path is looked up next to the study file
        first, then in the current directory; anything else is a hub id.
        """
        from sftlab.study.resolve import EMBEDDED_PREFIX, resolve_data_path

        if path.startswith(EMBEDDED_PREFIX):
            return resolve_data_path(path)
        candidate = Path(path).expanduser()
        if candidate.is_absolute():
            return str(candidate)
        if self.source_path is not None:
            beside = Path(self.source_path).parent / candidate
            if beside.exists():
                return str(beside)
        return str(candidate) if candidate.exists() else path


def _complete_study_model() -> None:
    """Resolve ``Study.methods``' union of method configs from the method registry.

    The registry's method modules build on the classes above, so the union is only
    known once this module is loaded; it is resolved on the first validation.
    """
    global MethodConfig
    if Study.__pydantic_complete__:
        return
    from sftlab.methods import MethodConfig

    Study.model_rebuild()


def _unknown(noun: str, value: str, known: tuple[str, ...] | list[str], noun_hint: str = "") -> str:
    close = difflib.get_close_matches(str(value), list(known), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(known)})"
    where = f" {noun_hint}" if noun_hint and not close else ""
    return f"unknown {noun} '{value}'{hint}{where}"


def _cross_problems(raw: dict) -> list[str]:
    """Checks across keys, run on the raw mapping so they are reported with field errors."""
    def names(key: str) -> list[str]:
        items = raw.get(key) if isinstance(raw.get(key), list) else []
        return [str(i["name"]) for i in items if isinstance(i, dict) and "name" in i]

    problems = _duplicates("models", names("models")) + _duplicates("datasets", names("datasets"))
    grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
    methods = raw.get("methods") if isinstance(raw.get("methods"), dict) else {}
    grid_methods = grid.get("methods") if isinstance(grid.get("methods"), list) else []
    for i, method in enumerate(grid_methods):
        if method not in methods:
            problems.append(f"grid.methods[{i}]: " + _unknown(
                "method", str(method), tuple(methods), noun_hint="(define it under `methods`)"))
    ev = raw.get("evaluation") if isinstance(raw.get("evaluation"), dict) else {}
    benches = ev.get("benchmarks") if isinstance(ev.get("benchmarks"), list) else []
    for i, bench in enumerate(benches):
        chosen = bench.get("methods") if isinstance(bench, dict) else None
        for j, method in enumerate(chosen if isinstance(chosen, list) else []):
            if method not in methods:
                problems.append(f"evaluation.benchmarks[{i}].methods[{j}]: " + _unknown(
                    "method", str(method), tuple(methods), noun_hint="(define it under `methods`)"))
    settings = grid.get("settings") if isinstance(grid.get("settings"), list) else []
    if "leave_one_out" in settings and len(names("datasets")) < 2:
        problems.append("grid.settings: leave_one_out needs at least two datasets")
    return problems + _chain_problems(methods)


def _chain_problems(methods: dict) -> list[str]:
    """``init:`` must name a defined method and the chain must not loop back on itself."""
    parents = {k: m.get("init") for k, m in methods.items() if isinstance(m, dict)}
    problems = []
    for key, parent in parents.items():
        if parent is None:
            continue
        if parent not in methods:
            problems.append(f"methods.{key}.init: " + _unknown(
                "method", str(parent), tuple(methods), noun_hint="(define it under `methods`)"))
            continue
        seen, link = [key], parent
        while link is not None and link in parents and link not in seen:
            seen.append(link)
            link = parents[link]
        if link == key:
            problems.append(f"methods.{key}.init: the chain {' -> '.join([*seen, key])} "
                            "is a cycle")
    for key, method in methods.items():
        parent = method.get("init") if isinstance(method, dict) else None
        kind = methods[parent].get("type") or parent if isinstance(methods.get(parent), dict) \
            else None
        if isinstance(method, dict) and method.get("trainable") == "new" and kind != "upscale":
            problems.append(f"methods.{key}.trainable: `new` trains the layers an up-scaling "
                            f"added; start it from an upscale method (`init:`)")
    return problems


def _duplicates(key: str, names: list[str]) -> list[str]:
    return [f"{key}: duplicate name '{n}'" for n in sorted({n for n in names if names.count(n) > 1})]


# --- loading and error reporting -------------------------------------------------


def load_study(path: str | Path, *, overrides: dict | None = None) -> Study:
    """Read and validate a study file; raise UserError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text (byte {err.start}); save the study file as UTF-8",
                        where=str(path)) from None
    try:
        node, raw = _compose(text)
        lines = _key_lines(node) if node is not None else {}
    except RecursionError:
        raise UserError("nested too deeply to be a study file", where=str(path)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"invalid YAML: {getattr(err, 'problem', None) or err}", where=where) from None
    if not isinstance(raw, dict):
        raise UserError("a study file must be a YAML mapping (name:, models:, datasets:, ...)",
                        where=str(path))
    if overrides:
        raw = {**raw, **overrides}
    return study_from_dict(raw, source=path, lines=lines)


class _StudyLoader(yaml.SafeLoader):
    """Safe YAML that refuses aliases (``*name``) before anything expands them: a few
    hundred bytes of nested aliases would otherwise expand to gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML alias '*{event.anchor}' is not allowed in a study file "
                "(write the value out instead)", event.start_mark)
        return super().compose_node(parent, index)


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """(the document's node tree, its Python value), aliases refused."""
    loader = _StudyLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def study_from_dict(raw: dict, *, source: Path | None = None, lines: dict | None = None) -> Study:
    """Validate a study given as a dict (tests, the embedded quickstart)."""
    lines = lines or {}
    _complete_study_model()
    try:
        study = Study.model_validate(raw)
    except ValidationError as err:
        problems: dict[str, str] = {}
        for e in err.errors():
            if e["type"] == "value_error" and not _key_path(tuple(e["loc"])):
                continue  # cross-key checks: reported below, with their own key paths
            key, text = _describe(e, lines, source)
            problems.setdefault(key, text)  # a union's other branches add nothing
        extra = [_with_line(p, lines, source) for p in _cross_problems(raw)]
        raise UserError(list(problems.values()) + extra,
                        where=str(source) if source else "study") from None
    return study.model_copy(update={"source_path": source})


def _with_line(problem: str, lines: dict, source: Path | None) -> str:
    key = problem.split(":", 1)[0]
    loc = tuple(int(p) if p.isdigit() else p
                for p in key.replace("[", ".").replace("]", "").split("."))
    line = _nearest_line(loc, lines)
    return f"{source}:{line}: {problem}" if source and line else problem


def _describe(error: dict, lines: dict, source: Path | None) -> tuple[str, str]:
    loc = tuple(error["loc"])
    kind = error["type"]
    msg = error["msg"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        msg = _unknown("key", str(loc[-1]), known) if known else f"unknown key '{loc[-1]}'"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        msg = _unknown("value", str(error.get("input")), options)
    key = _key_path(loc)
    line = _nearest_line(loc, lines)
    prefix = f"{source}:{line}: " if source and line else ""
    return key, f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}"


def _key_path(loc: tuple) -> str:
    out = ""
    for part in _without_tag(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "union[", "list[", "literal[")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _known_keys(loc: tuple) -> list[str]:
    """The keys the mapping at ``loc`` may have (for "did you mean" hints)."""
    from sftlab.methods import METHOD_CONFIGS

    model: type[BaseModel] = Study
    parts = [p for p in loc if not isinstance(p, int)]
    while parts:
        part = str(parts.pop(0))
        field = model.model_fields.get(part)
        nested = _model_in(field.annotation) if field is not None else None
        if model is Study and part == "methods":
            if len(parts) < 2:
                return []
            parts.pop(0)  # the method's name
            nested = METHOD_CONFIGS.get(str(parts.pop(0)))  # its type (the union's tag)
        if nested is None:
            return []
        model = nested
    return [k for k in model.model_fields if k != "source_path"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X | None``, ``list[X]``, ...), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path in the YAML document to its 1-based line."""
    lines: dict[tuple, int] = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, key.value)
            lines.update(_key_lines(value, path))
            lines[path] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_key_lines(item, (*prefix, i)))
    return lines


def _without_tag(loc: tuple) -> tuple:
    """``loc`` without the method type pydantic puts after a method's name
    (``methods.cpt1.cpt.rope`` -> ``methods.cpt1.rope``)."""
    from sftlab.methods import METHOD_CONFIGS

    if len(loc) > 2 and loc[0] == "methods" and loc[2] in METHOD_CONFIGS:
        return (*loc[:2], *loc[3:])
    return loc


def _nearest_line(loc: tuple, lines: dict) -> int | None:
    clean = tuple(p for p in _without_tag(loc) if isinstance(p, int) or not str(p).startswith(
        ("function-", "union[", "list[", "literal[")))
    while clean:
        if clean in lines:
            return lines[clean]
        clean = clean[:-1]
    return None
