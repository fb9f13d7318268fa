"""
Who may use a listener: AuthorizationPolicy compiled per listener
(:mod:`tsgate.authz.engine`, :mod:`tsgate.authz.compile`) and per-source
connection limits (:mod:`tsgate.authz.limits`). Pure: no Twisted, no I/O;
the data path calls :mod:`tsgate.authz.gate` at accept and after inspection.
"""
