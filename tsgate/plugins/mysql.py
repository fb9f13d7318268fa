"""
Built-in ``mysql`` plugin: the greeting/handshake/COM_* observer of
:mod:`tsgate.hints.mysql`, chosen by Istio's ``port.protocol: MYSQL`` or a
``mysql-`` port name. There is no MySQL hint parser: the server speaks
first (see that module's docstring).
"""

from __future__ import annotations

from tsgate.hints.mysql import MysqlObserverFactory
from tsgate.plugins import declare

mysql_observer = declare(MysqlObserverFactory())
