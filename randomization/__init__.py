"""trot.randomization: domain randomization terms, declared once and applied by every backend."""

from trot.randomization.terms import (
    PER_JOINT,
    TERMS,
    RandomizationCfg,
    Term,
    nominal_values,
    sample_terms,
    validate,
)

__all__ = ["PER_JOINT", "TERMS", "RandomizationCfg", "Term", "nominal_values", "sample_terms", "validate"]
