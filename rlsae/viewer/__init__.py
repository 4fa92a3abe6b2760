"""The static feature viewer: a site of every SAE's features that opens from disk.

- :mod:`rlsae.viewer.export` — ``export_site(run_dir, sources=[...])``: the site, its index.
- :mod:`rlsae.viewer.source` — the protocol providers implement (``rlsae.agents.viewer_source``,
  ``rlsae.llm.viewer_source``) and the page data they return.
- :mod:`rlsae.viewer.pages` — one SAE: scan its store, merge the source's pages, write the files.
- :mod:`rlsae.viewer.scan` — per-feature statistics in two passes over a store.
- :mod:`rlsae.viewer.study`, :mod:`rlsae.viewer.pairs` — the study figure and feature pairs, from
  the typed analysis artifacts.
- :mod:`rlsae.viewer.config` — ``ExportConfig`` and the argument checks (no heavy imports).

The viewer imports no provider (``rlsae.agents``, ``rlsae.llm``); they import it.
"""
