# Run with: TSGATE_CONFIG=examples/istioinaction twistd -ny tac/tsgate.tac
# TSGATE_CONFIG may list several paths separated by ':' (like PATH);
# TSGATE_ARGS may add any `twistd tsgate` option, e.g. "--bind 127.0.0.1".
import os
import shlex

from twisted.application import service

from tsgate.tap import Options, makeService

options = Options()
args = []
for path in os.environ.get("TSGATE_CONFIG", "").split(os.pathsep):
    if path:
        args += ["--config", path]
args += shlex.split(os.environ.get("TSGATE_ARGS", ""))
options.parseOptions(args)

application = service.Application("tsgate")
makeService(options).setServiceParent(application)
