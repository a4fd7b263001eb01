"""trot.randomization: domain randomization terms, declared once and applied by every backend."""

from trot.randomization.params import EnvParams, nominal_params
from trot.randomization.randomizer import Randomizer
from trot.randomization.terms import TERMS, RandomizationCfg, Term, TermSpec, nominal_values, sample_term, validate

__all__ = [
    "TERMS",
    "EnvParams",
    "RandomizationCfg",
    "Randomizer",
    "Term",
    "TermSpec",
    "nominal_params",
    "nominal_values",
    "sample_term",
    "validate",
]
