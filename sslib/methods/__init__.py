"""Old import paths of names that moved in 0.2, kept for one release; each warns when imported.

``sslib.methods.losses`` is :mod:`sslib.losses`, ``sslib.methods.ema`` is :mod:`sslib.modules.ema`; the
Lightning methods are :mod:`sslib.app.methods`.
"""
