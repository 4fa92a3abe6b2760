"""rlsae.analysis: provider-neutral analyses and the studies' reports.

* :mod:`~rlsae.analysis.fit`: fits across agents (``FitResult``, ``rlsae.fit``).
* :mod:`~rlsae.analysis.mmcs`: MMCS between dictionaries (``MMCSResult``, ``rlsae.mmcs``) and
  the LM study's shared features (``SharedFeatures``, ``rlsae.shared-features``).
* :mod:`~rlsae.analysis.utility`: the paper's Tables 3 and 4 (``UtilityTables``,
  ``rlsae.utility-tables``).
* :mod:`~rlsae.analysis.figures`: plotly figures, plotly.js embedded (pages open offline).
* :mod:`~rlsae.analysis.report`: the shared HTML helpers and both studies' reports.

Imports only the SAE core and the base modules (``lint-imports`` checks it).
"""
