"""Language models trained with reward: the second activation provider.

RLHF side (this package's first half):

- :mod:`rlsae.llm.models`: ``load_model(name_or_dir)`` for hub names and local directories;
- :mod:`rlsae.llm.tiny`: ``pretrain_tiny(out_dir)``, the offline stand-in for Pythia;
- :mod:`rlsae.llm.data`: IMDb / local-file prefixes;
- :mod:`rlsae.llm.rewards`: the VADER utility table (paper eq. 3) and the classifier reward;
- :mod:`rlsae.llm.ppo` (ours) and :mod:`rlsae.llm.rloo` (TRL), driven by
  :func:`rlsae.llm.rlhf.rlhf_tune`;
- :mod:`rlsae.llm.score`: the aggregate utility of completions (paper Table 4).

Interpretation side: :mod:`rlsae.llm.divergence`, :mod:`rlsae.llm.record`,
:mod:`rlsae.llm.pipeline`.
"""
