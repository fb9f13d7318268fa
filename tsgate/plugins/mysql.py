"""
Built-in ``mysql`` plugin: the greeting/handshake/COM_* observer of
:mod:`tsgate.hints.mysql`, chosen by Istio's ``port.protocol: MYSQL`` or a
``mysql-`` port name. There is no MySQL hint parser: the server speaks
first (see that module's docstring).
"""

from __future__ import annotations

from twisted.plugin import IPlugin
from zope.interface import implementer

from tsgate.hints.mysql import MysqlObserver
from tsgate.interfaces import Emit, IStreamObserver, IStreamObserverFactory


@implementer(IPlugin, IStreamObserverFactory)
class MysqlObserverFactory:
    """Counts MySQL logins, COM_* commands and ERR packets per connection."""

    name = "mysql"
    protocol = "mysql"
    istio_protocols = ("MYSQL",)
    port_name_prefixes = ("mysql", "mariadb")

    def new_observer(self, emit: Emit) -> IStreamObserver:
        return MysqlObserver(emit)


mysql_observer = MysqlObserverFactory()
