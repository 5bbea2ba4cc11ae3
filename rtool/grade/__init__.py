"""Grading: where a row's prompt and gold answer are (fields), answer extraction, grading and voting groups
(answers), math-verify under a deadline (verifier), pass@k, maj@k and the eval tally (metrics).
Imports the base and rtool.io. Entry points: FieldMap, grade, grade_many, pass_at_k, EvalTally.
"""

from rtool.grade.answers import grade
from rtool.grade.metrics import pass_at_k

__all__ = ["grade", "pass_at_k"]
