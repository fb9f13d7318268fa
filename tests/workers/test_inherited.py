"""
A socket handed over the systemd way (``--workers``, socket activation) gets
the lean port, although Twisted has consumed ``LISTEN_FDS`` by then.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from tsgate.proxy.listen import inherited_socket

REPO = Path(__file__).resolve().parents[2]

# The child does what a worker does: LISTEN_PID set before Twisted is
# imported, twisted.internet.endpoints imported (it reads LISTEN_FDS and
# removes it from the environment), and only later the gateway's listen.
CHILD = r"""
import os, sys
given = int(os.environ.pop("TEST_LISTEN_FD"))
if given != 3:
    os.dup2(given, 3)  # where systemd puts the first socket
    os.close(given)
os.environ["LISTEN_PID"] = str(os.getpid())
from twisted.internet import endpoints, reactor
from twisted.internet.protocol import Factory, Protocol
assert "LISTEN_FDS" not in os.environ  # Twisted took it
from tsgate.proxy.listen import LeanPort, lean_adopt

class Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello from " + type(port).__name__.encode() + b"\n")
        self.transport.loseConnection()
        reactor.callLater(0, stop)

def stop():
    port.stopListening()  # as a draining worker does
    print("stopped", flush=True)
    reactor.callLater(2, reactor.stop)  # still running while the test connects again

port = lean_adopt(reactor, Factory.forProtocol(Hello), "systemd:domain=INET:index=0")
print(type(port).__name__, flush=True)
if isinstance(port, LeanPort):
    reactor.callLater(20, reactor.stop)  # bounded: the test connects at once
    reactor.run()
"""


def test_an_inherited_socket_gets_the_lean_port_after_twisted_read_the_environment() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    env.update(LISTEN_FDS="1", LISTEN_FDNAMES="tsgate-test",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    env["TEST_LISTEN_FD"] = str(listener.fileno())
    address = listener.getsockname()
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                             text=True, pass_fds=(listener.fileno(),))
    listener.close()  # the child's copy is the only one now
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "LeanPort"
        with socket.create_connection(address, timeout=10) as client:
            client.settimeout(10)
            received = b""
            while not received.endswith(b"\n"):
                chunk = client.recv(100)
                if not chunk:
                    break
                received += chunk
        assert received == b"hello from LeanPort\n"
        assert child.stdout.readline().strip() == "stopped"
        # The listening socket was the child's alone (ours is closed): once its
        # port stopped listening, new connections are refused, not queued.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=10).close()
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)


def test_nothing_handed_over_is_none_not_an_error() -> None:
    reactor = Clock()  # (only parsed with, never listened on)
    assert inherited_socket(reactor, "systemd:domain=INET:index=0") is None
    assert inherited_socket(reactor, "systemd:domain=UNIX:index=0") is None
    assert inherited_socket(reactor, "tcp:0") is None
