"""Stand-ins for the book's backends, runnable as scripts.

``echo_server.py`` behaves like ``cjimti/go-echo`` (``tcp-echo-service``) and
``fake_service.py`` like ``nicholasjackson/fake-service:v0.14.1``
(``simple-tls-service-1``/``-2``); ``../walkthrough.py`` starts them.
"""
