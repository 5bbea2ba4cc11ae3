"""Process reward models and choosing among candidates: step scores in one pass (score: PRMScorer), what a
prm-score output already holds (scored: --resume), Math-Shepherd step labels from rollouts (label), best-of-N
selection (bon). Below rtool.train: grpo's PRM reward uses the scorer.
Imports the base, rtool.io, rtool.grade and rtool.generate. Entry points: PRMScorer, Labeling, best_of_n.
"""

from rtool.prm.score import PRMScorer

__all__ = ["PRMScorer"]
