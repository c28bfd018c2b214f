"""The lm-evaluation-harness adapter (``--model nmsim``): model_args, registration, and the real SmolLM2-135M on a
tiny multiple-choice task written here as local JSONL files, its log-likelihoods checked against nmsim's own pruned
model. Skipped when lm_eval (optional: pip install 'lm_eval==0.4.13') is not installed."""

import json
import os
import subprocess
import sys

import pytest

# No network: lm_eval, datasets and huggingface_hub read these when first imported, so set them before that.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

pytest.importorskip("lm_eval", reason="lm_eval is not installed (optional: pip install 'lm_eval==0.4.13')")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nmsim.errors import NmsimError  # noqa: E402
from nmsim.patterns import parse_pattern  # noqa: E402
from nmsim.sparsify.linear import SparsityConfig, sparsified  # noqa: E402
from nmsim.sparsify.weight_pruning import WeightPruningConfig  # noqa: E402

TASK = "nmsim_tiny_capitals"
ITEMS = [  # (question, choices, index of the answer)
    ("The capital of France is", ["Paris", "Berlin", "Madrid", "Rome"], 0),
    ("The capital of Germany is", ["Rome", "Berlin", "Paris", "Lisbon"], 1),
    ("The capital of Italy is", ["Madrid", "Vienna", "Rome", "Oslo"], 2),
    ("The capital of Spain is", ["Lisbon", "Paris", "Athens", "Madrid"], 3),
    ("The capital of Japan is", ["Tokyo", "Seoul", "Beijing", "Bangkok"], 0),
    ("The capital of Egypt is", ["Nairobi", "Cairo", "Tunis", "Accra"], 1),
]
# (context, continuation): one-token and multi-token continuations, and a context ending in a space.
PAIRS = [("The capital of France is", " Paris"), ("The capital of France is", " Berlin"),
         ("Water boils at a temperature of ", "100 degrees Celsius."), ("1, 2, 3, 4,", " 5, 6")]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """The task: a YAML config and train/validation/test JSONL files, the datasets cache beside them."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    for split in ("train", "validation", "test"):
        rows = [json.dumps({"question": q, "choices": c, "answer": a}) for q, c, a in ITEMS]
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    files = "\n".join(f"    {split}: {root / f'{split}.jsonl'}" for split in ("train", "validation", "test"))
    (root / "tiny_capitals.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  cache_dir: {root / 'hf_datasets'}
  data_files:
{files}
output_type: multiple_choice
training_split: train
validation_split: validation
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: choices
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return root


def test_the_model_is_registered_and_nmsim_alone_does_not_import_lm_eval():
    from lm_eval.api.registry import get_model

    from nmsim.accuracy.lm_eval_adapter import NmsimLM

    assert get_model("nmsim") is NmsimLM
    code = "import sys, nmsim, nmsim.cli, nmsim.accuracy.study; nmsim.cli.build_parser(); print('lm_eval' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_model_args_are_checked_before_anything_loads():
    from nmsim.accuracy.lm_eval_adapter import AdapterArgs, NmsimLM, method_config

    with pytest.raises(NmsimError, match=r"unknown model_args bogus, sparsity; allowed: pretrained, pattern, .*"
                                         r"calibration_windows.*max_length"):
        NmsimLM(pretrained="smollm2-135m", bogus=1, sparsity="8:16")
    with pytest.raises(NmsimError, match="calibration_windows='many' must be int"):
        AdapterArgs.parse({"calibration_windows": "many"})
    with pytest.raises(NmsimError, match="choose activation or weight"):
        method_config(AdapterArgs(operand="gradient"))
    with pytest.raises(NmsimError, match="activation pruning only"):
        method_config(AdapterArgs(operand="weight", pattern="2:4", mitigation="variance"))
    # lm_eval's parser turns "none" into None, "16" into 16 and "true" into True; None means the default.
    args, hflm = AdapterArgs.parse({"pattern": "m4n2", "mitigation": None, "calibration_windows": "8",
                                    "prefill_only": "true", "targets": "o+down", "max_length": 256})
    assert (args.mitigation, args.calibration_windows, args.prefill_only, hflm) == ("none", 8, True,
                                                                                   {"max_length": 256})
    config = method_config(args)
    assert config.pattern == parse_pattern("2:4") and config.targets.projections == ("o", "down")
    assert config.targets.phase == "prefill"
    weight = method_config(AdapterArgs(operand="weight", pattern="8:16", criterion="wanda"))
    assert isinstance(weight, WeightPruningConfig) and weight.needs_calibration
    assert method_config(AdapterArgs(operand="weight")) == SparsityConfig(parse_pattern("dense"))


@pytest.mark.slow
def test_the_command_line_reaches_the_adapter(task_dir):
    # A process of its own: lm_eval's command line installs its log handler on the stderr of the moment.
    command = [sys.executable, "-m", "nmsim", "lm-eval", "--model", "nmsim", "--model_args",
               "pretrained=smollm2-135m,patern=8:16", "--tasks", TASK, "--include_path", str(task_dir)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "nmsim: error: --model nmsim: unknown model_args patern; allowed: pretrained, pattern" in done.stderr


def _direct_loglikelihood(lm, context: str, continuation: str) -> float:
    """Σ log p(continuation token | everything before it), tokenized as lm_eval does (trailing context spaces move
    to the continuation), on the same input tokens as lm_eval (the last token is never fed)."""
    spaces = len(context) - len(context.rstrip(" "))
    context, continuation = context[:len(context) - spaces], context[len(context) - spaces:] + continuation
    whole = lm.tokenizer(context + continuation).input_ids
    start = len(lm.tokenizer(context).input_ids)
    with torch.inference_mode():
        logits = lm.model(torch.tensor([whole[:-1]])).logits[0]
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(start, len(whole)))


@pytest.fixture(scope="module")
def evaluated(task_dir):
    """Per pattern (dense, 8:16 magnitude): lm_eval's results on the task (4 documents), the adapter's
    log-likelihoods of PAIRS, and the loaded model, after the adapter gave it back unpruned."""
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = {}
    for pattern in ("dense", "8:16"):
        # As `lm_eval --model nmsim --model_args …` builds it (batch_size 1: the same input shapes as the direct
        # computation, so a pruned near-tie ranks the same way).
        adapter = get_model("nmsim").create_from_arg_string(f"pretrained=smollm2-135m,pattern={pattern}",
                                                            {"batch_size": 1, "device": "cpu"})
        with adapter:
            results = lm_eval.simple_evaluate(model=adapter, tasks=[TASK], task_manager=tasks, limit=4,
                                              bootstrap_iters=0, log_samples=False)
            requests = [Instance("loglikelihood", {}, pair, index) for index, pair in enumerate(PAIRS)]
            loglikelihoods = [ll for ll, _ in adapter.loglikelihood(requests, disable_tqdm=True)]
        out[pattern] = results, loglikelihoods, adapter.loaded
    return out


@pytest.mark.slow
@pytest.mark.parametrize("pattern", ["dense", "8:16"])
def test_lm_eval_scores_the_task(evaluated, pattern):
    results, _, _ = evaluated[pattern]
    accuracy = results["results"][TASK]["acc,none"]
    assert 0.0 <= accuracy <= 1.0 and results["config"]["nmsim_pattern"] == pattern
    assert results["config"]["nmsim_model"] == "smollm2-135m"


@pytest.mark.slow
def test_loglikelihoods_equal_the_direct_computation_and_pruning_changes_them(evaluated):
    _, dense, lm = evaluated["dense"]
    _, pruned, _ = evaluated["8:16"]
    direct_dense = [_direct_loglikelihood(lm, c, x) for c, x in PAIRS]
    with sparsified(lm.model, SparsityConfig(parse_pattern("8:16"))):
        direct_pruned = [_direct_loglikelihood(lm, c, x) for c, x in PAIRS]
    assert dense == pytest.approx(direct_dense, abs=1e-4)
    assert pruned == pytest.approx(direct_pruned, abs=1e-4)
    assert min(abs(p - d) for p, d in zip(pruned, dense)) > 1e-3
    assert dense[0] > dense[1]  # Paris over Berlin
