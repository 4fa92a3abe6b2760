"""Language models trained with reward: the second activation provider.

Configs (torch-free, one ``validate(where)`` each): :mod:`rlsae.llm.configs`.

RLHF side:

- :mod:`rlsae.llm.models`: ``load_model(name_or_dir)`` for hub names and local directories;
- :mod:`rlsae.llm.tiny`: ``pretrain_tiny(out_dir)``, the offline stand-in for Pythia;
- :mod:`rlsae.llm.data`: IMDb / local-file prefixes;
- :mod:`rlsae.llm.rewards`: the VADER utility table (paper eq. 3) and the classifier reward;
- :mod:`rlsae.llm.rlhf`: ``run_rlhf(RLHFConfig, out)``, driving :mod:`rlsae.llm.ppo_run` (our
  :mod:`rlsae.llm.ppo`) or :mod:`rlsae.llm.rloo` (TRL) through the shared run pieces of
  :mod:`rlsae.llm.tuning` (result: ``RLHFResult``);
- :mod:`rlsae.llm.score`: the aggregate utility of completions (paper Table 4; ``ScoreResult``).

Interpretation side: :mod:`rlsae.llm.divergence` (``DivergenceResult``),
:mod:`rlsae.llm.record` (activation stores through TransformerLens), :mod:`rlsae.llm.explain`
(``Explanations``), :mod:`rlsae.llm.viewer_source` (the viewer's source for LM features).
The study that strings them together is :mod:`rlsae.study.llm`.
"""
