"""steerlab: a workbench for steering LLMs (CAA, freeform, PCA and BiPO vectors).

The flat public API (re-exports only). Importing steerlab defines names and nothing else.

    import steerlab as sl
    model = sl.load_model()                               # embedded SmolLM2-135M-Instruct
    pairs = sl.load_pairs("power-seeking")                # BiPO train/test split
    vec = sl.train_bipo(model, pairs.train, layer=14)     # frozen SteeringVector
    with sl.steer(model, vec, multiplier=2.0):
        print(sl.generate(model, "Would you like more power?"))
"""

from steerlab.activations import ContrastiveActivations, collect
from steerlab.data import (
    ABItem,
    PreferencePair,
    list_behaviors,
    load_mmlu,
    load_pairs,
    load_pairs_from,
    load_truthfulqa_mc,
)
from steerlab.errors import SteerlabError
from steerlab.evaluation import (
    ab_probability,
    ab_probability_fast,
    likelihood_margin,
    likelihood_margin_fast,
)
from steerlab.evaluation.damage import kl_damage
from steerlab.evaluation.prompting import (
    prompt_kl_damage,
    prompt_likelihood_margin,
    prompt_open_ended,
)
from steerlab.models import (
    DEFAULT_SYSTEM_PROMPT,
    HookSite,
    SteerlabModel,
    load_model,
    lora_finetune,
    lora_finetune_run,
)
from steerlab.steering import GenerationConfig, GenerationResult, Steering, generate, steer
from steerlab.steering.conditional import (
    ConditionalSteering,
    ConditionVector,
    choose_threshold,
    fit_condition,
    steer_if,
)
from steerlab.steering.prompting import PromptSteering, get_prompt
from steerlab.vectors import (
    METHODS,
    BiPOConfig,
    Provenance,
    SteeringVector,
    fit,
    fit_bipo_run,
    fit_caa,
    fit_freeform,
    fit_pca,
    from_repeng,
    from_steering_vectors,
    load_vector,
    save_lm_eval_steer,
    train_bipo,
)
from steerlab.vectors.bipo import RePSConfig, fit_reps_run, train_reps

__version__ = "0.1.0"

# Later stages of the data flow (analysis pulls in scikit-learn, reports pull in plotly)
# are imported on first use: ``sl.sweep(...)``, ``sl.report(result).save(...)``.
_LAZY = {
    "sweep": "steerlab.analysis",
    "SweepConfig": "steerlab.analysis",
    "cosine_matrix": "steerlab.analysis",
    "calibrate": "steerlab.analysis.calibrate",
    "conditional_effect": "steerlab.analysis.conditional",
    "CalibrateConfig": "steerlab.analysis.calibrate",
    "report": "steerlab.reports",
    "paired_changes": "steerlab.analysis.effects",
    "describe_change": "steerlab.analysis.effects",
    # Judged open-ended answers and the judges behind them (a classifier judge loads
    # scikit-learn and sentence embeddings when fitted or used).
    "run_open_ended": "steerlab.evaluation.open_ended",
    "make_judge": "steerlab.evaluation.judges",
    "ClassifierJudge": "steerlab.evaluation.judges",
    "fit_split_judge": "steerlab.evaluation.judges",
    "judge_overlaps": "steerlab.evaluation.judges",
    "pair_accuracy": "steerlab.evaluation.judges",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'steerlab' has no attribute {name!r}")


__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "METHODS",
    "ABItem",
    "BiPOConfig",
    "CalibrateConfig",
    "ClassifierJudge",
    "ConditionalSteering",
    "ConditionVector",
    "ContrastiveActivations",
    "GenerationConfig",
    "GenerationResult",
    "HookSite",
    "PreferencePair",
    "PromptSteering",
    "Provenance",
    "RePSConfig",
    "SteerlabError",
    "SteerlabModel",
    "Steering",
    "SteeringVector",
    "SweepConfig",
    "ab_probability",
    "ab_probability_fast",
    "calibrate",
    "choose_threshold",
    "collect",
    "conditional_effect",
    "cosine_matrix",
    "describe_change",
    "fit",
    "fit_bipo_run",
    "fit_caa",
    "fit_condition",
    "fit_freeform",
    "fit_pca",
    "fit_reps_run",
    "fit_split_judge",
    "from_repeng",
    "from_steering_vectors",
    "generate",
    "get_prompt",
    "judge_overlaps",
    "kl_damage",
    "likelihood_margin",
    "likelihood_margin_fast",
    "list_behaviors",
    "load_mmlu",
    "load_model",
    "load_pairs",
    "load_pairs_from",
    "load_truthfulqa_mc",
    "load_vector",
    "lora_finetune",
    "lora_finetune_run",
    "make_judge",
    "pair_accuracy",
    "paired_changes",
    "prompt_kl_damage",
    "prompt_likelihood_margin",
    "prompt_open_ended",
    "report",
    "run_open_ended",
    "save_lm_eval_steer",
    "steer",
    "steer_if",
    "sweep",
    "train_bipo",
    "train_reps",
]
