"""Test-only Krita plugin: drives the Layer Decomposition docker through its own button in the real GUI,
saves a screenshot, checks undo, and reports to $LB_RESULTS. Any uncaught exception ends Krita at once
(a plugin exception would otherwise open a modal dialog and block)."""

import json
import os
import sys
import time
import traceback

from krita import Extension, Krita
from PyQt5 import QtCore, QtWidgets

RESULTS = os.environ["LB_RESULTS"]
SHOT = os.environ.get("LB_SHOT", "")
MODE = os.environ.get("LB_GUI_MODE", "decompose")
res = {"steps": []}


def write() -> None:
    with open(RESULTS, "w") as f:
        json.dump(res, f, indent=1)


def hook(kind, value, tb) -> None:
    res["exception"] = "".join(traceback.format_exception(kind, value, tb))
    write()
    os._exit(3)


sys.excepthook = hook


def tree(node):
    out = []
    for c in node.childNodes():
        entry = {"name": c.name(), "type": c.type()}
        if c.type() == "grouplayer":
            entry["children"] = tree(c)
        out.append(entry)
    return out


def find_docker():
    for d in Krita.instance().dockers():
        if d.objectName() == "layerbridge_docker":
            return d
    return None


def clipped(d) -> list:
    """The docker's shown rows squashed or clipped: a field narrower than it needs, a label shorter than its
    wrapped text, or the whole column squeezed below its own minimum height (it should scroll instead)."""
    out = []
    for key, (label, field) in d.rows.items():
        if not field.isVisible():
            continue
        if field.width() < field.minimumSizeHint().width() or field.height() < field.minimumSizeHint().height():
            out.append(key)
        if label.width() < label.minimumSizeHint().width():
            out.append(key + " label")
    for name in ("stage", "last_seed", "last_caption", "error", "status"):
        label = getattr(d, name)
        if label.isVisible() and label.wordWrap() and label.height() < label.heightForWidth(label.width()):
            out.append(name)
    for name in ("reuse_seed", "use_caption", "copy", "decompose_button", "layer_button", "cancel_button"):
        button = getattr(d, name)
        if button.isVisible() and button.width() < button.minimumSizeHint().width():
            out.append(name)
    root = d.scroll.widget()
    if root.height() < root.minimumSizeHint().height():
        out.append("column")
    return out


def shoot(d, name: str) -> None:
    """The docker's whole column, at the docker's width, into $LB_SHOT_DIR/name (for the docs)."""
    folder = os.environ.get("LB_SHOT_DIR", "")
    if folder:
        column = d.scroll.widget()
        res.setdefault("shots", {})[name] = [column.grab().save(os.path.join(folder, name)), d.width(), d.height()]


def announced(d) -> dict:
    """The docker's controls once a server has announced other job options in its hello."""
    from layerbridge import protocol
    options = protocol.job_options({"job_options": {
        "presets": [{"name": "best", "label": "Best", "steps": 50, "summary": "50 steps, named layers"},
                    {"name": "draft", "label": "Draft", "steps": 8, "summary": "8 steps"}],
        "preset": "best", "layers": {"min": 2, "max": 6, "default": 4},
        "resolution": {"choices": [640, 1024, 1536], "default": 640},
        "steps": {"min": 4, "max": 60, "default": None}, "cfg_scale": {"min": 1.0, "max": 8.0, "default": 4.0},
        "caption_language": {"choices": ["en", "zh", "ja"], "default": "en"}}})
    d.layers.setValue(3)
    d.preset.setCurrentIndex(0)
    d._apply_options(options)
    items = lambda box: [[box.itemText(i), box.itemData(i)] for i in range(box.count())]
    return {"presets": items(d.preset), "preset_tip": d.preset.itemData(1, 3),       # 3: Qt.ToolTipRole
            "layers": [d.layers.minimum(), d.layers.maximum(), d.layers.value()],
            "resolutions": items(d.resolution), "languages": items(d.language),
            "steps": [d.steps.minimum(), d.steps.maximum(), d.steps.text()], "cfg": [d.cfg.minimum(), d.cfg.maximum()],
            "collected": {k: d.collect()[k] for k in ("layers", "preset", "steps")}}


class Driver:
    def __init__(self) -> None:
        self.deadline = time.monotonic() + float(os.environ.get("LB_GUI_TIMEOUT", "90"))
        self.doc = None
        self.docker = None

    def start(self) -> None:
        app = Krita.instance()
        window = app.activeWindow()
        res["steps"].append("window")
        doc = app.createDocument(320, 200, "Poster", "RGBA", "U8", "", 72.0)
        bg = doc.rootNode().childNodes()[0]
        rows = [b"".join(bytes([x * 255 // 319, y * 255 // 199, 90, 255]) for x in range(320)) for y in range(200)]
        bg.setPixelData(b"".join(rows), 0, 0, 320, 200)
        bg.setPixelData(bytes([40, 40, 220, 255]) * (100 * 60), 60, 50, 100, 60)
        window.addView(doc)
        doc.refreshProjection()
        self.doc = doc
        window.qwindow().resize(1500, 920)
        docker = find_docker()
        res["docker_found"] = docker is not None
        res["docker_class"] = type(docker).__name__ if docker else None
        if docker is None:
            return self.finish()
        for other in Krita.instance().dockers():     # room for the docker in the screenshot
            if other.objectName() not in ("layerbridge_docker", "KisLayerBox"):
                other.hide()
        docker.show()
        docker.raise_()
        self.docker = docker
        res["steps"].append("docker")
        if MODE == "results":
            from . import results
            self.scenarios = results.Scenarios(res, self.finish, docker)      # held: PyQt keeps no slot's object alive
            return QtCore.QTimer.singleShot(1000, self.scenarios.run)
        QtCore.QTimer.singleShot(2500, self.press_then_quit if MODE == "quit" else self.press)

    # -- quit mode: a second click, the docker closed and reopened, then Krita closed, all during a job --
    def press_then_quit(self) -> None:
        d = self.docker
        d.url.setText(os.environ["LB_URL"])
        d.url.editingFinished.emit()
        d.layers.setValue(2)
        d.steps.setValue(100)
        d.decompose_button.click()
        self.wait_for_job()

    def wait_for_job(self) -> None:
        d = self.docker
        run = d.run
        if run is None or time.monotonic() > self.deadline:
            res["no_job"] = {"stage": d.stage.text(), "error": d.error.text(), "details": d.details}
            return self.finish()
        if not (run.job and run.job.job_id):
            return QtCore.QTimer.singleShot(50, self.wait_for_job)
        res["job"] = run.job.job_id
        res["stage_during"] = d.stage.text()
        d.decompose("layer")                    # what the menu entry does while a run is active
        res["second_click"] = {"error": d.error.text(), "same_run": d.run is run,
                               "buttons": [d.decompose_button.isEnabled(), d.cancel_button.isEnabled()]}
        d.hide()
        d.show()
        res["reopened"] = {"visible": d.isVisible(), "same_run": d.run is run, "cancel": d.cancel_button.isEnabled()}
        res["steps"].append("quit")
        write()
        for doc in Krita.instance().documents():
            doc.setModified(False)
        Krita.instance().action("file_quit").trigger()

    def press(self) -> None:
        d = self.docker
        res["status_before"] = d.status.text()
        res["docker_visible"] = d.isVisible() and d.decompose_button.isVisible()
        d.url.setText(os.environ["LB_URL"])
        d.url.editingFinished.emit()
        if MODE == "error":
            d.advanced_button.setChecked(True)      # every option shown, with the error under them
        d.layers.setValue(int(os.environ.get("LB_LAYERS", "3")))
        res["steps_auto"] = {"shown": d.steps.text(), "saved": d.collect()["steps"]}     # a fresh kritarc
        d.steps.setValue(2)
        d.steps.stepDown()                      # one below the fewest steps: auto again
        res["steps_auto"]["below"] = [d.steps.text(), d.collect()["steps"]]
        d.steps.setValue(2)
        d.seed.setValue(11)
        d.prompt.setText("a poster with a blue box")
        d.prompt.editingFinished.emit()
        res["before"] = tree(self.doc.rootNode())
        d.decompose_button.click()
        res["steps"].append("clicked")
        self.when_done(self.done)

    def when_done(self, then) -> None:
        """Calls `then` once the docker's run has ended (with a stage or an error shown), or finishes on timeout."""
        d = self.docker
        if d.run is None and (d.stage.text() or d.error.text()):
            return then()
        if time.monotonic() > self.deadline:
            res["timeout"] = True
            return self.finish()
        QtCore.QTimer.singleShot(200, lambda: self.when_done(then))

    def done(self) -> None:
        d = self.docker
        res["stage"] = d.stage.text()
        res["error"] = d.error.text()
        res["details"] = d.details
        res["last_seed"] = [d.last_seed.text(), d.reuse_seed.isVisible()]
        res["caption_after_prompt"] = [d.last_caption.isVisible(), d.use_caption.isVisible()]  # a prompt was given
        QtCore.QTimer.singleShot(1500, self.after)

    def after(self) -> None:
        d = self.docker
        res["status_after"] = d.status.text()
        res["tree"] = tree(self.doc.rootNode())
        res["settings"] = Krita.instance().readSetting("layerbridge", "settings", "")
        if SHOT:
            window = Krita.instance().activeWindow().qwindow()
            res["shot_saved"] = window.grab().save(SHOT)
        if MODE == "error":
            res["error_layout"] = {"clipped": clipped(d), "advanced": d.advanced.isVisible(),
                                   "min_height": d.minimumSizeHint().height()}
            shoot(d, "krita-docker-error.png")
            res["announced"] = announced(d)
        if MODE == "decompose":
            Krita.instance().action("edit_undo").trigger()
            self.doc.waitForDone()
            QtCore.QTimer.singleShot(1000, self.after_undo)
        else:
            self.finish()

    def after_undo(self) -> None:
        res["after_undo"] = tree(self.doc.rootNode())
        # Decompose layer on the active layer, through the docker's other button
        self.doc.setActiveNode(self.doc.rootNode().childNodes()[0])
        QtCore.QTimer.singleShot(500, self.press_layer)

    def press_layer(self) -> None:
        res["active"] = self.doc.activeNode().name()
        self.docker.stage.setText("")
        self.docker.layer_button.click()
        self.when_done(self.layer_done)

    def layer_done(self) -> None:
        d = self.docker
        res["layer_stage"] = d.stage.text()
        res["layer_error"] = d.error.text()
        res["layer_tree"] = tree(self.doc.rootNode())
        QtCore.QTimer.singleShot(500, self.start_cmyk)

    # -- a CMYK document, through the same button: layers in CMYK, one undo step, no document left over --
    def start_cmyk(self) -> None:
        app = Krita.instance()
        doc = app.createDocument(160, 100, "Print", "CMYKA", "U8", "", 72.0)
        bg = doc.rootNode().childNodes()[0]
        bg.setPixelData(b"".join(bytes([x * 255 // 159, y * 255 // 99, 30, 0, 255]) for y in range(100)
                                 for x in range(160)), 0, 0, 160, 100)
        view = app.activeWindow().addView(doc)
        app.activeWindow().showView(view)
        doc.refreshProjection()
        doc.waitForDone()
        self.cmyk = doc
        QtCore.QTimer.singleShot(1000, self.press_cmyk)

    def press_cmyk(self) -> None:
        res["docker_width"] = [self.docker.width()]
        res["cmyk_active"] = Krita.instance().activeDocument().name()
        res["cmyk_before"] = tree(self.cmyk.rootNode())
        res["cmyk_docs_before"] = sorted(d.name() for d in Krita.instance().documents())
        self.docker.stage.setText("")
        self.docker.seed.setValue(-1)           # random: the server picks the seed
        self.docker.prompt.setText("")          # no prompt: the model describes the picture
        self.docker.prompt.editingFinished.emit()
        self.docker.decompose_button.click()
        self.when_done(self.cmyk_done)

    def cmyk_done(self) -> None:
        d = self.docker
        res["cmyk_stage"] = d.stage.text()
        res["cmyk_error"] = d.error.text()
        res["cmyk_tree"] = tree(self.cmyk.rootNode())
        group = self.cmyk.rootNode().childNodes()[-1]
        res["cmyk_spaces"] = sorted({(c.colorModel(), c.colorDepth(), c.colorProfile()) for c in group.childNodes()})
        res["cmyk_doc_space"] = [self.cmyk.colorModel(), self.cmyk.colorDepth(), self.cmyk.colorProfile()]
        res["cmyk_docs_after"] = sorted(d.name() for d in Krita.instance().documents())
        res["random_seed"] = {"shown": d.last_seed.text(), "visible": d.reuse_seed.isVisible(), "before": d.seed.text()}
        d.reuse_seed.click()
        res["random_seed"]["after"] = d.seed.value()
        res["random_seed"]["saved"] = json.loads(Krita.instance().readSetting("layerbridge", "settings", "{}"))["seed"]
        res["caption"] = {"shown": d.last_caption.text(), "tooltip": d.last_caption.toolTip(),
                          "visible": [d.last_caption.isVisible(), d.use_caption.isVisible()]}
        d.advanced_button.setChecked(True)
        # the test model's description is noise: for the screenshot, one the real model gives such a poster
        real = {"seed": d.shown_seed, "caption": d.shown_caption}
        d._show_result({"seed": d.shown_seed, "caption": "A poster with a gradient from green to magenta and a blue "
                        "rectangle; the rectangle reads “LayerBridge-Decomposition-Sample”."})
        QtWidgets.QApplication.processEvents()
        res["result_layout"] = {"clipped": clipped(d), "min_height": d.minimumSizeHint().height(),
                                "status": [d.status_kind, d.dot.styleSheet()]}
        shoot(d, "krita-docker-result.png")
        d._show_result(real)
        d.advanced_button.setChecked(False)
        d.use_caption.click()
        res["caption"]["prompt"] = d.prompt.text()
        res["caption"]["saved"] = json.loads(Krita.instance().readSetting("layerbridge", "settings", "{}"))["prompt"]
        Krita.instance().action("edit_undo").trigger()
        self.cmyk.waitForDone()
        QtCore.QTimer.singleShot(1000, self.after_cmyk_undo)

    def after_cmyk_undo(self) -> None:
        res["cmyk_after_undo"] = tree(self.cmyk.rootNode())
        res["docker_width"].append(self.docker.width())     # with the model's description shown
        self.finish()

    def finish(self) -> None:
        res["steps"].append("finish")
        write()
        for doc in Krita.instance().documents():
            doc.setModified(False)
        QtCore.QTimer.singleShot(5000, lambda: os._exit(4))
        Krita.instance().action("file_quit").trigger()


class DriverExtension(Extension):
    def setup(self) -> None:
        self.driver = Driver()
        Krita.instance().notifier().windowCreated.connect(
            lambda: QtCore.QTimer.singleShot(1500, self.driver.start))

    def createActions(self, window) -> None:
        pass


Krita.instance().addExtension(DriverExtension(Krita.instance()))
