"""The doctor's yardstick: ordinary training mistakes, each with the cause the doctor must name.

``causes.py`` holds the cause vocabulary and which finding ids name each cause; ``dev_cases.py``
and ``heldout_cases.py`` the broken runs, ``healthy_cases.py`` the runs that must stay quiet,
``builders.py`` the defective data sets and user models, ``run.py`` the runner and its table.
"""
