"""Runs inside kritarunner: drives the plugin on real documents and reports to $LB_RESULTS (JSON).

Entry points take kritarunner's positional arguments: scenario names to run, in order."""

import json
import os
import sys
import time
import traceback

from krita import Krita, Selection

from layerbridge import document, pixels
from layerbridge.decompose import Decomposition
from layerbridge.qt import QtCore

WORK = os.environ.get("LB_WORKDIR", "/tmp")
URL = os.environ.get("LB_URL", "")
TOKEN = os.environ.get("LB_TOKEN", "")
PARAMS = {"layers": 2, "steps": 2, "resolution": 640, "seed": 7, "prompt": "a test picture"}


def make_doc(w, h, name):
    doc = Krita.instance().createDocument(w, h, name, "RGBA", "U8", "", 72.0)
    bg = doc.rootNode().childNodes()[0]
    # known content: a blue-green gradient with a red square, in Krita's BGRA order
    rows = []
    for y in range(h):
        rows.append(b"".join(bytes([(x * 255) // max(1, w - 1), (y * 255) // max(1, h - 1), 0, 255]) for x in range(w)))
    bg.setPixelData(b"".join(rows), 0, 0, w, h)
    bg.setPixelData(bytes([0, 0, 255, 255]) * (w // 4) * (h // 4), w // 4, h // 4, w // 4, h // 4)
    doc.refreshProjection()
    doc.waitForDone()
    return doc


def tree(node):
    out = []
    for c in node.childNodes():
        b = c.bounds()
        entry = {"name": c.name(), "type": c.type(), "bounds": [b.x(), b.y(), b.width(), b.height()]}
        if c.type() == "grouplayer":
            entry["children"] = tree(c)
        out.append(entry)
    return out


def run(doc, mode="image", values=None, url=None, token=None, node=None, on_progress=None, timeout_ms=120000):
    values = dict(PARAMS, **(values or {}))
    d = Decomposition(doc, mode, values, url or URL, TOKEN if token is None else token, node=node)
    loop = QtCore.QEventLoop()
    out = {"progress": []}

    def progress(text, fraction):
        out["progress"].append([text, fraction])
        if on_progress:
            on_progress(d, text)

    def finished(group):
        out["ok"] = True
        loop.quit()

    def failed(code, text, details):
        out.update(ok=False, code=code, text=text, details=details)
        loop.quit()

    d.progress.connect(progress)
    d.finished.connect(finished)
    d.failed.connect(failed)
    QtCore.QTimer.singleShot(0, d.start)
    timer = QtCore.QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: (out.update(ok=False, code="test_timeout"), loop.quit()))
    timer.start(timeout_ms)
    loop.exec_() if hasattr(loop, "exec_") else loop.exec()
    timer.stop()
    out["job"] = d.job.job_id if d.job else ""
    out["region"] = list(d.source.region) if d.source else None
    return d, out


def dump_group(tag, group, result, region):
    """Each child's pixels at the server's placement, as RGBA, to files for the test to compare."""
    entries = []
    placements = pixels.plan(result, pixels.Region(*region))
    children = group.childNodes()
    for p, child in zip(placements, children):
        path = os.path.join(WORK, "%s_%d.rgba" % (tag, p.index))
        data = b""
        if p.width * p.height:
            data = pixels.bgra_to_rgba(bytes(child.pixelData(p.x, p.y, p.width, p.height)))
        with open(path, "wb") as f:
            f.write(data)
        b = child.bounds()
        entries.append({"name": child.name(), "index": p.index, "place": [p.x, p.y, p.width, p.height],
                        "bounds": [b.x(), b.y(), b.width(), b.height()], "file": path})
    return {"group": group.name(), "children": entries}


# -- scenarios ------------------------------------------------------------------------------------
def s_image(res):
    doc = make_doc(96, 64, "Poster")
    d, out = run(doc)
    out["tree"] = tree(doc.rootNode())
    if out.get("ok"):
        out.update(dump_group("image", d.group, d.result, out["region"]))
        path = os.path.join(WORK, "saved.kra")
        doc.setBatchmode(True)
        out["saved"] = bool(doc.saveAs(path))
        again = Krita.instance().openDocument(path)
        out["reopened"] = tree(again.rootNode())
        group = again.rootNode().childNodes()[-1]
        out["reopened_pixels_equal"] = all(
            pixels.bgra_to_rgba(bytes(c.pixelData(*e["place"]))) == open(e["file"], "rb").read()
            for c, e in zip(group.childNodes(), out["children"]) if e["place"][2] * e["place"][3])
        again.close()
    res["image"] = out


def s_selection(res):
    doc = make_doc(96, 64, "Sel")
    sel = Selection()
    sel.select(20, 10, 40, 30, 255)
    doc.setSelection(sel)
    d, out = run(doc)
    out["tree"] = tree(doc.rootNode())
    if out.get("ok"):
        out.update(dump_group("selection", d.group, d.result, out["region"]))
    res["selection"] = out


def s_layer(res):
    doc = make_doc(96, 64, "Lay")
    root = doc.rootNode()
    top = doc.createNode("Sticker", "paintlayer")
    top.setPixelData(bytes([0, 200, 0, 255]) * (30 * 20), 50, 30, 30, 20)
    root.addChildNode(top, root.childNodes()[0])
    d, out = run(doc, "layer", node=top)
    out["tree"] = tree(doc.rootNode())
    out["source_unchanged"] = bytes(top.pixelData(50, 30, 30, 20)) == bytes([0, 200, 0, 255]) * 600
    if out.get("ok"):
        out.update(dump_group("layer", d.group, d.result, out["region"]))
    res["layer"] = out


def s_cancel(res):
    doc = make_doc(96, 64, "Cancel")
    before = tree(doc.rootNode())
    state = {"sent": False}

    def progress(d, text):
        if d.job is not None and d.job.job_id and not state["sent"]:
            state["sent"] = True
            d.cancel()

    d, out = run(doc, values={"steps": 100}, on_progress=progress)
    out["unchanged"] = tree(doc.rootNode()) == before
    out["tree"] = tree(doc.rootNode())
    res["cancel"] = out


def s_stopped(res):
    doc = make_doc(32, 32, "Stopped")
    before = tree(doc.rootNode())
    d, out = run(doc, url=os.environ.get("LB_DEAD_URL", "http://127.0.0.1:9"))
    out["unchanged"] = tree(doc.rootNode()) == before
    res["stopped"] = out


def s_badtoken(res):
    doc = make_doc(32, 32, "Token")
    d, out = run(doc, token="wrong-token")
    res["badtoken"] = out


def s_dropped(res):
    doc = make_doc(96, 64, "Dropped")
    d, out = run(doc, values={"steps": 8}, url=os.environ["LB_PROXY_URL"])
    out["tree"] = tree(doc.rootNode())
    if out.get("ok"):
        out.update(dump_group("dropped", d.group, d.result, out["region"]))
    res["dropped"] = out


def s_colour(res):
    doc = Krita.instance().createDocument(16, 16, "Deep", "RGBA", "U16", "", 72.0)
    before = tree(doc.rootNode())
    d, out = run(doc, url="http://127.0.0.1:9")
    out["unchanged"] = tree(doc.rootNode()) == before
    res["colour"] = out


def s_halfbuilt(res):
    """A failure while building the group (a layer's pixels missing) leaves the document as it was."""
    doc = make_doc(40, 30, "Half")
    before = tree(doc.rootNode())
    src = document.capture(doc, "image")
    result = {"name": "Half", "canvas": {"width": 40, "height": 30}, "layers": [
        {"index": 0, "name": "Background", "x": 0, "y": 0, "width": 40, "height": 30},
        {"index": 1, "name": "Missing", "x": 0, "y": 0, "width": 5, "height": 5}]}
    try:
        document.insert(doc, src, result, {0: bytes(40 * 30 * 4)})
        res["halfbuilt"] = {"raised": False}
    except Exception as e:
        res["halfbuilt"] = {"raised": True, "error": repr(e), "unchanged": tree(doc.rootNode()) == before}


SCENARIOS = {name[2:]: fn for name, fn in list(globals().items()) if name.startswith("s_")}


def main(args):
    res = {"python": sys.version.split()[0]}
    path = os.environ["LB_RESULTS"]
    try:
        for name in args:
            t0 = time.monotonic()
            try:
                SCENARIOS[name](res)
            except Exception:
                res.setdefault("errors", {})[name] = traceback.format_exc()
            res.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 2)
            with open(path, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        with open(path, "w") as f:
            json.dump(res, f, indent=1)
        sys.stdout.flush()
        os._exit(0)
