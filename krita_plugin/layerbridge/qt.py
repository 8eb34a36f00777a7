"""One import for PyQt5 (Krita 5) and PyQt6 (Krita 6).

Krita has already loaded its own binding before any plugin runs, so the binding
in sys.modules wins; loading the other one would mix two Qt versions."""

import sys

if "PyQt6" in sys.modules or "PyQt5" not in sys.modules and "krita" not in sys.modules:
    try:
        from PyQt6 import QtCore, QtGui, QtNetwork, QtWidgets
        QT6 = True
    except ImportError:
        from PyQt5 import QtCore, QtGui, QtNetwork, QtWidgets
        QT6 = False
else:
    from PyQt5 import QtCore, QtGui, QtNetwork, QtWidgets
    QT6 = False

Qt = QtCore.Qt
QNetworkRequest = QtNetwork.QNetworkRequest
QNetworkReply = QtNetwork.QNetworkReply


def enum(owner: object, path: str) -> object:
    """`enum(QNetworkRequest, "Attribute.HttpStatusCodeAttribute")` on both bindings
    (PyQt6 only has scoped names, PyQt5 always has the short one)."""
    name = path.rpartition(".")[2]
    obj = owner
    try:
        for part in path.split("."):
            obj = getattr(obj, part)
        return obj
    except AttributeError:
        return getattr(owner, name)


HTTP_STATUS = enum(QNetworkRequest, "Attribute.HttpStatusCodeAttribute")
CONTENT_TYPE = enum(QNetworkRequest, "KnownHeaders.ContentTypeHeader")
NO_ERROR = enum(QNetworkReply, "NetworkError.NoError")
CANCELED_ERROR = enum(QNetworkReply, "NetworkError.OperationCanceledError")


def exec_(obj: object) -> int:
    run = getattr(obj, "exec", None) or getattr(obj, "exec_")
    return run()
