"""The ``twistd matrixhs`` plugin.

Deliberately tiny: importing it must not import the server, so that
``twistd --help`` stays fast. Everything lives in :mod:`mxtwisted.tap`.
"""

from twisted.application.service import ServiceMaker

matrixhs = ServiceMaker(
    "matrixhs",
    "mxtwisted.tap",
    "A Matrix homeserver (Client-Server and Server-Server APIs).",
    "matrixhs",
)
