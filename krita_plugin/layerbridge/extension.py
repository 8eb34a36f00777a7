"""Menu entries (Tools › Scripts) that drive the docker."""

from krita import Extension, Krita

from .docker import DOCKER_ID


def _docker():
    for d in Krita.instance().dockers():
        if d.objectName() == DOCKER_ID:
            return d
    return None


class LayerBridgeExtension(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window: object) -> None:
        for name, text, mode in (("layerbridge_decompose", "Decompose Image into Layers", "image"),
                                 ("layerbridge_decompose_layer", "Decompose Active Layer", "layer")):
            action = window.createAction(name, text, "tools/scripts")
            action.triggered.connect(lambda _=False, m=mode: self._run(m))

    def _run(self, mode: str) -> None:
        docker = _docker()
        if docker is not None:
            docker.show()
            docker.decompose(mode)
