"""LayerBridge for Krita: split a flat image into editable layers with a LayerBridge server."""

try:
    from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita
except ImportError:         # imported outside Krita (tests of the pure modules)
    Krita = None

if Krita is not None and Krita.instance() is not None:
    from .docker import DOCKER_ID, LayerDocker
    from .extension import LayerBridgeExtension

    _app = Krita.instance()
    _app.addExtension(LayerBridgeExtension(_app))
    _app.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, LayerDocker))
