"""
Several worker processes behind one set of ports (``--workers N``).

:mod:`tsgate.workers.supervisor` binds the sockets, starts and watches the
workers and adds their numbers up for one admin server;
:mod:`tsgate.workers.channel` is the worker's end of the line to it;
:mod:`tsgate.workers.snapshot` turns a worker's stats into JSON and back.
"""
