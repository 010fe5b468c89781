"""Which unlabeled scans to annotate next (``uncol suggest``; docs/suggest.md).

* :mod:`uncol.suggestions.sources`: the scans to rank (files and folders, or a run's unlabeled split).
* :mod:`uncol.suggestions.scores`: a scan's mean predictive entropy and foreground entropy.
* :mod:`uncol.suggestions.disagreement`: how far the foundation teacher, prompted from the student's
  prediction, disagrees with it.
* :mod:`uncol.suggestions.ranking`: scans grouped by patient and ranked.
* :mod:`uncol.suggestions.table`: the files ``suggestions.csv``, ``scans.csv`` and ``suggestions.json``.

:func:`uncol.suggest.suggest` runs them in order.
"""
