"""GUI scenarios on results made by the test (no model): a Decompose layer that hides its source, live text layers,
nested element groups, each checked against Krita's own Undo and Redo. Driven by lbgui_driver (LB_GUI_MODE=results);
reports into its results. Pixel files are Krita's bgra8; the test compares them."""

import json
import os
import time

from krita import Krita

from layerbridge import document, settings
from layerbridge.decompose import Decomposition
from layerbridge.qt import QtCore

WORK = os.environ.get("LB_WORKDIR", "/tmp")


def tree(node):
    out = []
    for c in node.childNodes():
        entry = {"name": c.name(), "type": c.type(), "visible": c.visible()}
        if c.type() == "grouplayer":
            entry["children"] = tree(c)
        out.append(entry)
    return out


def walk(node):
    for c in node.childNodes():
        yield c
        if c.type() == "grouplayer":
            yield from walk(c)


def projection(doc, name):
    """The document's whole image, to a file (bgra8)."""
    doc.refreshProjection()
    doc.waitForDone()
    path = os.path.join(WORK, name + ".bgra")
    with open(path, "wb") as f:
        f.write(bytes(doc.pixelData(0, 0, doc.width(), doc.height())))
    return path


def new_doc(name, w, h, layers, depth="U8", dpi=72.0):
    """A document shown in the window, with paint layers [(name, bgra8 bytes, x, y, w, h)] bottom to top (in a
    16-bit document, each value v as v × 257)."""
    app = Krita.instance()
    # a 16-bit document in sRGB (Krita's default 16-bit profile is linear), so 8-bit v is v × 257 exactly
    doc = app.createDocument(w, h, name, "RGBA", depth, "sRGB-elle-V2-srgbtrc.icc" if depth == "U16" else "", dpi)
    root = doc.rootNode()
    for node in root.childNodes():
        node.remove()
    for lname, data, x, y, lw, lh in layers:
        node = doc.createNode(lname, "paintlayer")
        if depth == "U16":
            import struct
            data = struct.pack("<%dH" % len(data), *(v * 257 for v in data))
        node.setPixelData(data, x, y, lw, lh)
        root.addChildNode(node, None)
    window = app.activeWindow()
    window.showView(window.addView(doc))
    doc.refreshProjection()
    doc.waitForDone()
    return doc


def insert(doc, mode, result, layers, node=None, **values):
    """The docker's path once the job is done: the result inserted by a Decomposition, as after a real job."""
    d = Decomposition(doc, mode, settings.normalize(dict({"layers": 2}, **values)), "http://127.0.0.1:9", "",
                      node=node)
    d.source = document.capture(doc, mode, node)
    state = {}
    d.finished.connect(lambda group: state.update(ok=True))
    d.failed.connect(lambda code, text, details: state.update(ok=False, code=code, details=details))
    d._job_done(result, layers)
    return d, state


class Scenarios:
    def __init__(self, res, finish, docker=None):
        self.docker = docker
        self.res = res
        self.finish = finish
        self.steps = []
        self.deadline = time.monotonic() + float(os.environ.get("LB_GUI_TIMEOUT", "90"))

    def run(self):
        names = os.environ.get("LB_RESULT_SCENARIOS", "standin,text,textoff,textdeep,nested,split,shot").split(",")
        for name in names:
            self.steps += getattr(self, "s_" + name)()
        self.next()

    def next(self):
        if not self.steps:
            return self.finish()
        if time.monotonic() > self.deadline:
            self.res["timeout"] = True
            return self.finish()
        step = self.steps.pop(0)
        self.res["steps"].append(getattr(step, "__name__", "step"))
        delay = step()
        QtCore.QTimer.singleShot(int(delay or 0), self.next)

    def undo(self):
        Krita.instance().action("edit_undo").trigger()
        return 1000

    def redo(self):
        Krita.instance().action("edit_redo").trigger()
        return 1000

    def wait(self, state, then_ms=800):
        """A step that waits for an insertion to end."""
        def step():
            if "ok" not in state:
                self.steps.insert(0, step)
                return 100
            return then_ms
        return step

    # -- A: Decompose layer hides its source; one undo brings it back ------------------------------
    def s_standin(self):
        out = self.res.setdefault("standin", {})
        w, h = 120, 80
        bg = b"".join(bytes([x * 2, y * 3, 90, 255]) for y in range(h) for x in range(w))
        sticker = b"".join(bytes([200, 40 + x, 30, 128 if x % 7 else 64]) for y in range(50) for x in range(60))
        st = {}

        def setup():
            doc = new_doc("Standin", w, h, [("Background", bg, 0, 0, w, h), ("Sticker", sticker, 20, 10, 60, 50)])
            st["doc"] = doc
            st["source"] = doc.rootNode().childNodes()[1]
            out["before"] = tree(doc.rootNode())
            out["before_image"] = projection(doc, "standin_before")
            # two layers that composite to the sticker exactly: its left and right halves
            half = lambda x0: b"".join(sticker[(y * 60 + x0) * 4:(y * 60 + x0 + 30) * 4] for y in range(50))
            result = {"name": "Sticker", "canvas": {"width": 60, "height": 50}, "layers": [
                {"index": 0, "name": "Left", "x": 0, "y": 0, "width": 30, "height": 50},
                {"index": 1, "name": "Right", "x": 30, "y": 0, "width": 30, "height": 50}]}
            st["d"], st["state"] = insert(doc, "layer", result, {0: half(0), 1: half(30)}, node=st["source"])
            self.steps.insert(0, self.wait(st["state"]))

        def after():
            doc = st["doc"]
            out["state"] = st["state"]
            out["after"] = tree(doc.rootNode())
            out["after_image"] = projection(doc, "standin_after")
            return self.undo()

        def undone():
            doc = st["doc"]
            out["undone"] = tree(doc.rootNode())
            out["undone_image"] = projection(doc, "standin_undone")
            return self.redo()

        def redone():
            out["redone"] = tree(st["doc"].rootNode())
            out["redone_image"] = projection(st["doc"], "standin_redone")
        return [setup, after, undone, redone]

    # -- B: live text over hidden pixels -------------------------------------------------------------
    def _poster(self, tag, text_layers, depth="U8", dpi=72.0):
        out = self.res.setdefault(tag, {})
        meta, read = _poster_files()
        w, h = meta["width"], meta["height"]
        st = {}

        def setup():
            doc = new_doc("Poster " + tag, w, h, [("Poster", read("poster.bgra"), 0, 0, w, h)], depth, dpi)
            st["doc"] = doc
            out["before"] = tree(doc.rootNode())
            st["d"], st["state"] = insert(doc, "image", meta["result"], {0: read("layer0.bgra"), 1: read("layer1.bgra")},
                                          text_layers=text_layers)
            self.steps.insert(0, self.wait(st["state"], 1500))       # vector layers are drawn a moment later

        def after():
            doc = st["doc"]
            out["state"] = st["state"]
            out["notes"] = st["d"].notes
            out["after"] = tree(doc.rootNode())
            out["after_image"] = projection(doc, tag + "_after")
            out["svg"] = [n.toSvg() for n in walk(doc.rootNode()) if n.type() == "vectorlayer"]
            # the text hidden and its pixels shown: the exact composite again
            for n in walk(doc.rootNode()):
                if n.type() == "vectorlayer":
                    n.setVisible(False)
                elif n.name().endswith("(pixels)"):
                    n.setVisible(True)
            return 1000

        def swapped():
            doc = st["doc"]
            out["pixels_image"] = projection(doc, tag + "_pixels")
            for n in walk(doc.rootNode()):
                if n.type() == "vectorlayer":
                    n.setVisible(True)
                elif n.name().endswith("(pixels)"):
                    n.setVisible(False)
            return self.undo()

        def undone():
            out["undone"] = tree(st["doc"].rootNode())
        return [setup, after, swapped, undone]

    def s_text(self):
        return self._poster("text", True)

    def s_textoff(self):
        return self._poster("textoff", False)

    def s_textdeep(self):
        """A 16-bit document at 300 dpi: the text in its own depth, at the same place (Krita keeps vector shapes in
        points)."""
        return self._poster("textdeep", True, "U16", 300.0)

    # -- C: Split layer (the server's split task) and nested element groups ---------------------------
    def s_split(self):
        """Split layer, through the docker's button, on a layer of three soft-edged shapes, while a decomposition
        runs on the server: a group of three layers at the shapes' places, the source hidden; one undo restores."""
        out = self.res.setdefault("split", {})
        w, h = 160, 100
        bg = b"".join(bytes([230, 230, 230, 255]) for _ in range(w * h))
        shapes = bytearray(w * h * 4)
        boxes = [(10, 10, 30, 20), (70, 30, 25, 40), (120, 60, 30, 30)]
        for i, (x0, y0, bw, bh) in enumerate(boxes):
            for y in range(y0, y0 + bh):
                for x in range(x0, x0 + bw):
                    edge = min(x - x0, x0 + bw - 1 - x, y - y0, y0 + bh - 1 - y)
                    shapes[(y * w + x) * 4:(y * w + x) * 4 + 4] = bytes([40 * i, 200 - 50 * i, 90, 255 if edge else 120])
        st = {}
        d = self.docker

        def setup():
            doc = new_doc("Split", w, h, [("Background", bg, 0, 0, w, h), ("Shapes", bytes(shapes), 0, 0, w, h)])
            st["doc"] = doc
            st["source"] = doc.rootNode().childNodes()[1]
            doc.setActiveNode(st["source"])
            out["before"] = tree(doc.rootNode())
            out["before_image"] = projection(doc, "split_before")
            d.url.setText(os.environ["LB_URL"])
            d.url.editingFinished.emit()
            return 1500

        def busy():
            # a decomposition on the model first, long enough that the split runs while it does
            d.steps.setValue(100)
            d.decompose_button.click()
            st["run"] = d.run
            return 1500

        def press():
            out["active"] = st["doc"].activeNode().name()
            out["model_running_at_press"] = d.run is not None and d.run is st["run"]
            d.split_button.click()
            out["split_started"] = d.splitting is not None
            self.steps.insert(0, waiting)

        def waiting():
            if d.splitting is not None:
                self.steps.insert(0, waiting)
                return 100
            out["model_running_after"] = d.run is not None and d.run is st["run"]
            out["error"] = d.error.text()
            out["stage"] = d.split_message
            if d.run is not None:
                d.run.cancel()
            return 1000

        def after():
            doc = st["doc"]
            out["after"] = tree(doc.rootNode())
            group = doc.rootNode().childNodes()[-1]
            out["bounds"] = [[c.bounds().x(), c.bounds().y(), c.bounds().width(), c.bounds().height()]
                             for c in group.childNodes()] if group.type() == "grouplayer" else []
            out["after_image"] = projection(doc, "split_after")
            return self.undo()

        def undone():
            out["undone"] = tree(st["doc"].rootNode())
            out["undone_image"] = projection(st["doc"], "split_undone")
            out["boxes"] = boxes
        return [setup, busy, press, after, undone]

    def s_nested(self):
        """A decomposition's result with its elements (split_elements, docs/protocol.md Result): nested groups,
        one undo step."""
        out = self.res.setdefault("nested", {})
        w, h = 60, 40
        st = {}

        def setup():
            doc = new_doc("Nested", w, h, [("Background", bytes([200, 200, 200, 255]) * (w * h), 0, 0, w, h)])
            st["doc"] = doc
            out["before"] = tree(doc.rootNode())
            result = {"name": "Nested", "canvas": {"width": w, "height": h}, "layers": [
                {"index": 0, "name": "Background", "x": 0, "y": 0, "width": w, "height": h, "group": False,
                 "parent": None},
                {"index": 1, "name": "Icons", "x": 5, "y": 5, "width": 40, "height": 10, "group": True, "parent": None,
                 "children": [2, 3]},
                {"index": 2, "name": "Icons 1", "x": 5, "y": 5, "width": 10, "height": 10, "group": False, "parent": 1},
                {"index": 3, "name": "Icons 2", "x": 35, "y": 5, "width": 10, "height": 10, "group": False, "parent": 1},
                {"index": 4, "name": "Logo", "x": 10, "y": 20, "width": 8, "height": 8, "group": False, "parent": None}]}
            layers = {0: bytes([10, 20, 30, 255]) * (w * h), 2: bytes([0, 0, 255, 255]) * 100,
                      3: bytes([0, 255, 0, 255]) * 100, 4: bytes([255, 0, 0, 255]) * 64}
            st["d"], st["state"] = insert(doc, "image", result, layers)
            self.steps.insert(0, self.wait(st["state"]))

        def after():
            out["state"] = st["state"]
            out["after"] = tree(st["doc"].rootNode())
            return self.undo()

        def undone():
            out["undone"] = tree(st["doc"].rootNode())
        return [setup, after, undone]

    def s_shot(self):
        """For the docs: the poster decomposed with its text as live text and its shapes as a group of elements, the
        groups open; the window and the Layers docker saved into $LB_SHOT_DIR."""
        out = self.res.setdefault("shot", {})
        meta, read = _poster_files()
        w, h = meta["width"], meta["height"]
        st = {}

        def setup():
            app = Krita.instance()
            for other in app.dockers():
                if other.objectName() == "KisLayerBox":
                    other.show()
            doc = new_doc("Poster", w, h, [("Poster", read("poster.bgra"), 0, 0, w, h)])
            st["doc"] = doc
            result = json.loads(json.dumps(meta["result"]))
            text = result["layers"][1]
            dots = {"index": 2, "name": "Dots", "x": 640, "y": 300, "width": 200, "height": 60, "group": True,
                    "parent": None, "children": [3, 4, 5]}
            result["layers"] = [result["layers"][0], dict(text, index=1, name="Headline")]
            layers = {0: read("layer0.bgra"), 1: read("layer1.bgra")}
            result["layers"].append(dots)
            for i, (x, colour) in enumerate(((640, (40, 40, 220)), (715, (40, 180, 60)), (790, (230, 140, 20)))):
                result["layers"].append({"index": 3 + i, "name": "Dots %d" % (i + 1), "x": x, "y": 300, "width": 50,
                                         "height": 60, "group": False, "parent": 2})
                layers[3 + i] = bytes([colour[2], colour[1], colour[0], 255]) * (50 * 60)
            st["d"], st["state"] = insert(doc, "image", result, layers, text_layers=True)
            self.steps.insert(0, self.wait(st["state"], 1500))

        def shoot():
            doc = st["doc"]
            for n in walk(doc.rootNode()):
                if n.type() == "grouplayer":
                    n.setCollapsed(False)
            return 800

        def save():
            shots = os.environ.get("LB_SHOT_DIR", "")
            window = Krita.instance().activeWindow().qwindow()
            box = next((d for d in Krita.instance().dockers() if d.objectName() == "KisLayerBox"), None)
            out["window"] = bool(shots) and window.grab().save(os.path.join(shots, "krita-text-layers.png"))
            out["layers"] = bool(shots) and box is not None and box.grab().save(
                os.path.join(shots, "krita-layers-docker.png"))
            out["tree"] = tree(st["doc"].rootNode())
        return [setup, shoot, save]


def _poster_files():
    """The rendered poster the tests put in $LB_POSTER: its poster.json, and a reader of its pixel files."""
    folder = os.environ["LB_POSTER"]
    with open(os.path.join(folder, "poster.json")) as f:
        meta = json.load(f)

    def read(name):
        with open(os.path.join(folder, name), "rb") as f:
            return f.read()
    return meta, read
