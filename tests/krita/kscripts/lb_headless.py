"""Runs inside kritarunner: drives the plugin on real documents and reports to $LB_RESULTS (JSON).

Entry points take kritarunner's positional arguments: scenario names to run, in order."""

import json
import os
import sys
import time
import traceback

from krita import Krita, Selection

from layerbridge import document, pixels, settings
from layerbridge.decompose import Decomposition
from layerbridge.qt import QtCore

WORK = os.environ.get("LB_WORKDIR", "/tmp")
URL = os.environ.get("LB_URL", "")
TOKEN = os.environ.get("LB_TOKEN", "")
PARAMS = {"layers": 2, "steps": 2, "resolution": 640, "seed": 7, "prompt": "a test picture"}
# the scenarios' documents, kept: a Document from createDocument closes its document when Python collects it,
# which would change Krita.instance().documents() under the checks that no conversion document stays open
KEEP = []


def swapped(data):
    """bgra8 ↔ rgba8: the plugin sends and inserts Krita's own bgra8; these checks speak the protocol's rgba8."""
    out = bytearray(data)
    out[0::4] = data[2::4]
    out[2::4] = data[0::4]
    return bytes(out)


def make_doc(w, h, name):
    doc = Krita.instance().createDocument(w, h, name, "RGBA", "U8", "", 72.0)
    KEEP.append(doc)
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
    values = settings.normalize(dict(PARAMS, **(values or {})))
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


def dump_group(tag, group, result, region, raw=False):
    """Each child's pixels at the server's placement, as RGBA (or, with `raw`, as Krita holds them in the
    document's colour space), to files for the test to compare."""
    entries = []
    placements = pixels.plan(result, pixels.Region(*region))
    children = group.childNodes()
    for p, child in zip(placements, children):
        path = os.path.join(WORK, "%s_%d.rgba" % (tag, p.index))
        data = b""
        if p.width * p.height:
            data = bytes(child.pixelData(p.x, p.y, p.width, p.height))
            if not raw:
                data = swapped(data)
        with open(path, "wb") as f:
            f.write(data)
        b = child.bounds()
        entries.append({"name": child.name(), "index": p.index, "place": [p.x, p.y, p.width, p.height],
                        "bounds": [b.x(), b.y(), b.width(), b.height()], "file": path,
                        "space": [child.colorModel(), child.colorDepth(), child.colorProfile()]})
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
            swapped(bytes(c.pixelData(*e["place"]))) == open(e["file"], "rb").read()
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


def s_toolarge(res):
    """With the server's limits known (from the docker's status check), a too large area is refused before
    a pixel is read or the server is asked, for the image and for a layer."""
    doc = make_doc(96, 64, "Huge")
    res["toolarge"] = {}
    for mode in ("image", "layer"):
        d = Decomposition(doc, mode, settings.normalize(PARAMS), "http://127.0.0.1:9", "", limits={"max_pixels": 1000},
                          node=doc.rootNode().childNodes()[0])
        out = {}
        d.failed.connect(lambda code, text, details, out=out: out.update(code=code, text=text, details=details))
        d.progress.connect(lambda text, fraction, out=out: out.setdefault("progress", []).append(text))
        d.start()
        out.update(read=d.source is not None, job=d.job is not None)
        res["toolarge"][mode] = out


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


# -- the user keeps working while the server works --------------------------------------------------
def when_job_known(action):
    """An on_progress hook that runs `action(d)` once, as soon as the server has given the job an id."""
    state = {"done": False}

    def hook(d, text):
        if d.job is not None and d.job.job_id and not state["done"]:
            state["done"] = True
            action(d)
    return hook


def s_closed(res):
    """The source document is closed during the job: the layers land in a new document like it."""
    doc = make_doc(96, 64, "Closed")
    before = open_docs()
    d, out = run(doc, values={"steps": 6}, on_progress=when_job_known(lambda d: doc.close()))
    out["docs_before"], out["docs_after"] = before, open_docs()
    out["note"] = getattr(d, "note", "")
    if out.get("ok"):
        target = d.target
        out["target"] = {"name": target.name(), "size": [target.width(), target.height()],
                         "resolution": target.resolution(), "space": space(target), "tree": tree(target.rootNode())}
        out.update(dump_group("closed", d.group, d.result, out["region"]))
    res["closed"] = out


def s_moved(res):
    """The source layer is moved into a new group during the job: the result goes right above it there."""
    doc = make_doc(96, 64, "Moved")
    root = doc.rootNode()
    sticker = doc.createNode("Sticker", "paintlayer")
    sticker.setPixelData(bytes([0, 200, 0, 255]) * (30 * 20), 50, 30, 30, 20)
    root.addChildNode(sticker, root.childNodes()[0])

    def move(d):
        folder = doc.createGroupLayer("Folder")
        root.addChildNode(folder, sticker)
        sticker.remove()
        folder.addChildNode(sticker, None)
        folder.addChildNode(doc.createNode("Over", "paintlayer"), sticker)
        out["moved_tree"] = tree(root)

    out = {}
    d, result = run(doc, "layer", node=sticker, on_progress=when_job_known(move))
    out.update(result)
    out["tree"] = tree(root)
    res["moved"] = out


def s_orphaned(res):
    """The group holding the source layer is deleted during the job: the result goes on top of the document."""
    doc = make_doc(96, 64, "Orphaned")
    root = doc.rootNode()
    box = doc.createGroupLayer("Box")
    root.addChildNode(box, root.childNodes()[0])
    inner = doc.createNode("Inner", "paintlayer")
    inner.setPixelData(bytes([0, 0, 200, 255]) * (20 * 10), 10, 10, 20, 10)
    box.addChildNode(inner, None)
    d, out = run(doc, "layer", node=inner, on_progress=when_job_known(lambda d: box.remove()))
    out["tree"] = tree(root)
    out["group_attached"] = d.group is not None and d.group.parentNode() is not None
    res["orphaned"] = out


def s_offsets(res):
    """A selection at an odd offset, and a layer moved partly off the canvas (bounds at negative coordinates)."""
    doc = make_doc(96, 64, "Odd")
    sel = Selection()
    sel.select(13, 7, 41, 29, 255)
    doc.setSelection(sel)
    d, out = run(doc)
    if out.get("ok"):
        out.update(dump_group("odd", d.group, d.result, out["region"]))
    res["odd"] = out
    doc.setSelection(Selection())
    doc2 = make_doc(96, 64, "Off")
    root = doc2.rootNode()
    off = doc2.createNode("Off", "paintlayer")
    off.setPixelData(b"".join(bytes([x * 8, y * 12, 200, 255]) for y in range(20) for x in range(30)), -11, -5, 30, 20)
    root.addChildNode(off, root.childNodes()[0])
    d, out = run(doc2, "layer", node=off)
    if out.get("ok"):
        out.update(dump_group("off", d.group, d.result, out["region"]))
    out["tree"] = tree(root)
    res["off"] = out


def s_cancel_insert(res):
    """Cancel while the layers are being added: nothing is added."""
    doc = make_doc(96, 64, "LateCancel")
    before = tree(doc.rootNode())

    def progress(d, text):
        if text.startswith("Adding layers") and not getattr(d, "cancelled", False):
            d.cancel()

    d, out = run(doc, on_progress=progress)
    out["unchanged"] = tree(doc.rootNode()) == before
    out["texts"] = [p[0] for p in out["progress"]]
    res["cancel_insert"] = out


def s_cancel_upload(res):
    """Cancel during the upload, through a proxy that holds the upload back for $LB_STALL_S seconds:
    a small image (all of it already sent: the job is cancelled once the server names it) and a large one
    (still sending: the upload stops and no job is made)."""
    url = os.environ["LB_STALL_URL"]
    for tag, size in (("sent", (96, 64)), ("sending", (2400, 1800))):
        doc = Krita.instance().createDocument(size[0], size[1], "Upload " + tag, "RGBA", "U8", "", 72.0)
        KEEP.append(doc)
        doc.rootNode().childNodes()[0].setPixelData(bytes(range(256)) * (size[0] * size[1] // 64), 0, 0, *size)
        doc.refreshProjection()
        doc.waitForDone()
        before = tree(doc.rootNode())
        clock = {}

        def progress(d, text):
            if text.startswith("Uploading") and "cancel" not in clock:
                clock["cancel"] = None

                def cancel():
                    clock["cancel"] = time.monotonic()
                    d.cancel()
                QtCore.QTimer.singleShot(2000, cancel)

        d, out = run(doc, url=url, on_progress=progress, timeout_ms=90000)
        out["after_cancel_s"] = time.monotonic() - clock["cancel"] if clock.get("cancel") else None
        out["unchanged"] = tree(doc.rootNode()) == before
        del out["progress"]
        res["cancel_upload_" + tag] = out


def s_responsive(res):
    """Adding a large result (three 4000 × 3000 layers) leaves Krita's event loop turning: the longest gap
    between ticks of a 10 ms timer while the layers go in."""
    doc = Krita.instance().createDocument(4000, 3000, "Large", "RGBA", "U8", "", 72.0)
    KEEP.append(doc)
    d = Decomposition(doc, "image", settings.normalize(PARAMS), "http://127.0.0.1:9", "")
    d.source = document.capture(doc, "image")
    result = {"name": "Large", "canvas": {"width": 4000, "height": 3000}, "layers": [
        {"index": i, "name": "Layer %d" % i, "x": 0, "y": 0, "width": 4000, "height": 3000} for i in range(3)]}
    layers = {i: swapped(bytes([i * 80, 100, 200 - i * 60, 255])) * (4000 * 3000) for i in range(3)}
    loop = QtCore.QEventLoop()
    ticks = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    out = {}
    d.finished.connect(lambda group: (out.update(ok=True), loop.quit()))
    d.failed.connect(lambda code, text, details: (out.update(ok=False, code=code, details=details), loop.quit()))
    timer.start(10)
    t0 = time.monotonic()
    ticks.append(t0)
    QtCore.QTimer.singleShot(0, lambda: d._job_done(result, layers))
    loop.exec_() if hasattr(loop, "exec_") else loop.exec()
    ticks.append(time.monotonic())
    timer.stop()
    out["total_s"] = ticks[-1] - t0
    out["max_gap_s"] = max(b - a for a, b in zip(ticks, ticks[1:]))
    group = doc.rootNode().childNodes()[-1]
    out["group"] = [group.name(), [c.name() for c in group.childNodes()]]
    out["pixel"] = list(bytes(group.childNodes()[2].pixelData(3999, 2999, 1, 1)))
    res["responsive"] = out


def s_gcstress(res):
    """Jobs and status polls while a timer runs Python's garbage collector every 20 ms, as any other plugin's
    garbage may make it run: a reply's handler must not be collected while its request is under way (Krita
    crashed in the handler). The results are written after each job, so a crash leaves what had run."""
    import gc

    from layerbridge.client import Api, StatusProbe

    out = {"jobs": [], "probes": 0, "probe_kinds": []}
    res["gcstress"] = out

    def write():
        with open(os.environ["LB_RESULTS"], "w") as f:
            json.dump(res, f, indent=1)

    write()
    collector = QtCore.QTimer()
    collector.timeout.connect(gc.collect)
    collector.start(20)
    api = Api(URL, TOKEN)
    polling = {"on": True}

    def poll():
        # the docker's status check, far more often than its 1.5-5 s: each result starts the next 250 ms later
        if not polling["on"]:
            return
        probe = polling["probe"] = StatusProbe(api)        # held until its result, as the docker does

        def shown(kind, text, detail):
            polling["probe"] = None
            out["probes"] += 1
            if kind not in out["probe_kinds"]:
                out["probe_kinds"].append(kind)
            QtCore.QTimer.singleShot(250, poll)

        probe.result.connect(shown)
        probe.run()

    poll()
    doc = make_doc(64, 48, "Collected")
    for i in range(int(os.environ.get("LB_GC_JOBS", "6"))):
        d, job = run(doc, values={"steps": 4, "seed": i}, timeout_ms=240000)
        out["jobs"].append({"ok": job.get("ok"), "code": job.get("code", "")})
        write()
    polling["on"] = False
    collector.stop()


# -- documents that are not RGB 8-bit --------------------------------------------------------------
def space(obj):
    return [obj.colorModel(), obj.colorDepth(), obj.colorProfile()]


def open_docs():
    return sorted(d.name() for d in Krita.instance().documents())


def pattern(n):
    """n RGBA 8-bit pixels: for n = 256, every value of each colour channel, and 86 levels of alpha."""
    return [((i * 7) % 256, 255 - i % 256, i % 256, 255 if i % 3 else i % 256) for i in range(n)]


def pack(px, depth):
    """RGBA tuples of 0..255 as Krita's pixelData bytes: U16 stores blue first (v*257 per channel),
    F32 stores red first (linear light for the default linear profile)."""
    import struct
    if depth == "U16":
        return b"".join(struct.pack("<4H", b * 257, g * 257, r * 257, a * 257) for r, g, b, a in px)
    return b"".join(struct.pack("<4f", lin(r), lin(g), lin(b), a / 255) for r, g, b, a in px)


def lin(v):
    c = v / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def deep_doc(name, depth, profile):
    doc = Krita.instance().createDocument(16, 16, name, "RGBA", depth, profile, 72.0)
    KEEP.append(doc)
    doc.rootNode().childNodes()[0].setPixelData(pack(pattern(256), depth), 0, 0, 16, 16)
    doc.refreshProjection()
    doc.waitForDone()
    return doc


def synthetic(doc, name):
    """A result of two layers (one full, one offset) inserted straight through document.insert."""
    src = document.capture(doc, "image")
    result = {"name": name, "canvas": {"width": 16, "height": 16}, "layers": [
        {"index": 0, "name": "Background", "x": 0, "y": 0, "width": 16, "height": 16},
        {"index": 1, "name": "Patch", "x": 3, "y": 4, "width": 5, "height": 6}]}
    rgba = {0: bytes(v for px in pattern(256)[::-1] for v in px), 1: bytes(v for px in pattern(30) for v in px)}
    group = document.insert(doc, src, result, {k: swapped(v) for k, v in rgba.items()})
    return src, group, rgba


def deep_report(doc, depth):
    """Everything a 16-bit or float document goes through, with no server: read (image, selection, layer)
    and insert."""
    bg = doc.rootNode().childNodes()[0]
    before = {"tree": tree(doc.rootNode()), "space": space(doc),
              "bg": bytes(bg.pixelData(0, 0, 16, 16)), "docs": open_docs()}
    out = {"expected": [v for px in pattern(256) for v in px]}
    out["image"] = list(swapped(document.capture(doc, "image").data))
    out["layer"] = list(swapped(document.capture(doc, "layer", bg).data))
    src, group, rgba = synthetic(doc, "Deep " + depth)
    out["sent"] = {str(k): list(v) for k, v in rgba.items()}
    out["children"] = []
    for child, (x, y, w, h) in zip(group.childNodes(), ((0, 0, 16, 16), (3, 4, 5, 6))):
        out["children"].append({"name": child.name(), "space": space(child),
                                "raw": list(bytes(child.pixelData(x, y, w, h)))})
    out["tree"] = tree(doc.rootNode())
    out["space_unchanged"] = space(doc) == before["space"]
    out["bg_unchanged"] = bytes(bg.pixelData(0, 0, 16, 16)) == before["bg"]
    out["docs_unchanged"] = open_docs() == before["docs"]
    out["space"] = before["space"]
    out["own_layers_unchanged"] = out["tree"][:-1] == before["tree"]
    out["image_now"] = list(swapped(document.capture(doc, "image").data))
    sel = Selection()
    sel.select(4, 5, 6, 7, 255)
    doc.setSelection(sel)
    src = document.capture(doc, "image")
    out["selection_region"] = list(src.region)
    out["selection"] = list(swapped(src.data))
    return out


def s_deep16(res):
    res["deep16"] = deep_report(deep_doc("Deep16", "U16", pixels.SRGB[2]), "U16")


def s_deep16wide(res):
    """A wide-gamut 16-bit RGB document: only the depth changes on the way out and back."""
    res["deep16wide"] = deep_report(deep_doc("Deep16Wide", "U16", "WideRGB-elle-V2-g22.icc"), "U16")


def s_float(res):
    res["float"] = deep_report(deep_doc("Float", "F32", ""), "F32")


def s_roundtrip(res):
    """L*a*b*, XYZ and YCbCr documents: opaque 8-bit sRGB layers inserted, then the image read back."""
    res["roundtrip"] = {}
    # YCbCr named: Krita's default YCbCr profile is any of several, run to run
    for model, depth, profile in (("LABA", "U16", ""), ("XYZA", "F32", ""), ("LABA", "U8", ""),
                                  ("YCbCrA", "U8", "ITU-R BT.709-6 YCbCr ICC V2 profile")):
        doc = Krita.instance().createDocument(16, 16, "Round " + model + depth, model, depth, profile, 72.0)
        KEEP.append(doc)
        docs = open_docs()
        src = document.capture(doc, "image")
        result = {"name": "Round", "canvas": {"width": 16, "height": 16},
                  "layers": [{"index": 0, "name": "All", "x": 0, "y": 0, "width": 16, "height": 16}]}
        sent = bytes(v for r, g, b, a in pattern(256) for v in (r, g, b, 255))
        group = document.insert(doc, src, result, {0: swapped(sent)})
        back = swapped(document.capture(doc, "image").data)
        res["roundtrip"][model + depth] = {
            "space": space(doc), "child": space(group.childNodes()[0]), "len": len(back),
            "max_diff": max(abs(a - b) for a, b in zip(back, sent)),
            "mean_diff": sum(abs(a - b) for a, b in zip(back, sent)) / len(sent), "docs_unchanged": open_docs() == docs}


def model_doc(model, name):
    """A 96 × 64 grayscale or CMYK document with a gradient and a patch, in its own bytes."""
    doc = Krita.instance().createDocument(96, 64, name, model, "U8", "", 72.0)
    KEEP.append(doc)
    bg = doc.rootNode().childNodes()[0]
    if model == "GRAYA":
        data = b"".join(bytes([(x * 255) // 95, 255]) for y in range(64) for x in range(96))
    else:
        data = b"".join(bytes([(x * 255) // 95, (y * 255) // 63, 40, 0, 255]) for y in range(64) for x in range(96))
    bg.setPixelData(data, 0, 0, 96, 64)
    doc.refreshProjection()
    doc.waitForDone()
    return doc


def live_model_run(res, model, tag, name):
    """The docker's path (capture, job, insert) on a grayscale or CMYK document, against the server."""
    doc = model_doc(model, name)
    bg = doc.rootNode().childNodes()[0]
    before = {"tree": tree(doc.rootNode()), "space": space(doc),
              "bg": bytes(bg.pixelData(0, 0, 96, 64)), "docs": open_docs()}
    d, out = run(doc)
    out["tree"] = tree(doc.rootNode())
    out["space"] = before["space"]
    out["space_unchanged"] = space(doc) == before["space"]
    out["bg_unchanged"] = bytes(bg.pixelData(0, 0, 96, 64)) == before["bg"]
    out["docs_unchanged"] = open_docs() == before["docs"]
    out["docs"] = [before["docs"], open_docs()]
    out["own_layers_unchanged"] = out["tree"][:-1] == before["tree"]
    if out.get("ok"):
        out.update(dump_group(tag, d.group, d.result, out["region"], raw=True))
    res[tag] = out


def s_gray(res):
    live_model_run(res, "GRAYA", "gray", "Gray")


def s_cmyk(res):
    live_model_run(res, "CMYKA", "cmyk", "Print")


def s_u16(res):
    """The docker's path on a 16-bit sRGB document, against the server."""
    doc = deep_doc("Deep", "U16", pixels.SRGB[2])
    before = {"tree": tree(doc.rootNode()), "docs": open_docs()}
    d, out = run(doc)
    out["tree"] = tree(doc.rootNode())
    out["docs_unchanged"] = open_docs() == before["docs"]
    out["own_layers_unchanged"] = out["tree"][:-1] == before["tree"]
    out["space"] = space(doc)
    if out.get("ok"):
        out.update(dump_group("u16", d.group, d.result, out["region"], raw=True))
    res["u16"] = out


def s_halfbuilt(res):
    """A failure while building the group (a layer's pixels missing) leaves the document as it was, on an
    8-bit document and on a 16-bit one (where the first layer has already gone through a conversion)."""
    res["halfbuilt"] = {}
    for tag, doc in (("rgba8", make_doc(40, 30, "Half")), ("u16", deep_doc("Half16", "U16", pixels.SRGB[2]))):
        w, h = doc.width(), doc.height()
        before = tree(doc.rootNode())
        src = document.capture(doc, "image")
        docs = open_docs()
        result = {"name": "Half", "canvas": {"width": w, "height": h}, "layers": [
            {"index": 0, "name": "Background", "x": 0, "y": 0, "width": w, "height": h},
            {"index": 1, "name": "Missing", "x": 0, "y": 0, "width": 5, "height": 5}]}
        try:
            document.insert(doc, src, result, {0: bytes(w * h * 4)})
            res["halfbuilt"][tag] = {"raised": False}
        except Exception as e:
            res["halfbuilt"][tag] = {"raised": True, "error": repr(e), "unchanged": tree(doc.rootNode()) == before,
                                     "docs_unchanged": open_docs() == docs}


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
