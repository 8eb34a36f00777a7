"""The plugin's network client under plain Qt (PyQt5 or PyQt6, no Krita): one job, one status probe.

usage: python lb_qtclient.py PLUGIN_DIR URL TOKEN BINDING [quit|long|lost]  — prints a JSON summary.

With `quit`, the application quits as soon as the image has been uploaded, before the server has named the
job: what Krita does when the user closes it at that moment. With `long`, the job is a long one, and a line
"running" is printed when it starts (for a test to stop the server then). With `lost`, the same, and a line
"reconnecting" once the client has noticed that the server is gone."""

import json
import sys

sys.path.insert(0, sys.argv[1])
binding = sys.argv[4] if len(sys.argv) > 4 else ""
if binding:
    __import__(binding)          # the binding Krita would have loaded

from layerbridge import protocol  # noqa: E402
from layerbridge.client import Api, Job, StatusProbe  # noqa: E402
from layerbridge.qt import QT6, QtCore, exec_  # noqa: E402

app = QtCore.QCoreApplication([])
url, token = sys.argv[2], sys.argv[3]
out = {"qt6": QT6, "qt": QtCore.QT_VERSION_STR, "progress": []}
api = Api(url, token)
w, h = 24, 16
bgra = bytes((x * 10) % 256 for x in range(w * h * 4))
params = {"layers": 2, "steps": 2, "resolution": 640, "seed": 3, "prompt": "x", "name": "Qt", "width": w, "height": h,
          "name_layers": False}
job = Job(api)
job.progress.connect(lambda s: out["progress"].append(protocol.describe_progress(s)))


def finished(result, layers):
    out.update(ok=True, job=job.job_id, names=[l["name"] for l in result["layers"]],
               sizes={str(k): len(v) for k, v in layers.items()}, layers={str(k): v.hex() for k, v in layers.items()})
    probe = StatusProbe(api)
    probe.result.connect(lambda kind, text, detail: (out.update(status=[kind, text]), app.quit()))
    probe.run()


if sys.argv[5:] == ["quit"]:
    params.update(steps=40, layers=4)

    def uploaded(state):
        if state.get("stage") == "uploading" and state["sent"] == state["bytes"] and "quit_at" not in out:
            out["quit_at"] = state["sent"]
            QtCore.QTimer.singleShot(0, app.quit)

    job.progress.connect(uploaded)
    app.aboutToQuit.connect(lambda: out.update(job_at_quit=job.job_id))
elif sys.argv[5:] == ["lost"]:
    # a long job; "running" when it runs, then "reconnecting" once, as soon as the client says the server is lost
    params.update(steps=100, layers=4)
    job.progress.connect(lambda s: print("running", flush=True) if s.get("state") == "running" else None)

    def lost(state):
        if state.get("state") == "reconnecting" and "lost_text" not in out:
            out["lost_text"] = protocol.describe_progress(state)
            print("reconnecting", flush=True)

    job.progress.connect(lost)
    job.finished.connect(lambda result, layers: (out.update(ok=True), app.quit()))
elif sys.argv[5:] == ["long"]:
    params.update(steps=100, layers=4)
    job.progress.connect(lambda s: print("running", flush=True) if s.get("state") == "running" else None)
    job.finished.connect(lambda result, layers: (out.update(ok=True), app.quit()))
else:
    job.finished.connect(finished)
job.failed.connect(lambda code, msg: (out.update(ok=False, code=code, message=msg), app.quit()))
QtCore.QTimer.singleShot(0, lambda: job.start(params, bgra))
QtCore.QTimer.singleShot(60000, app.quit)
exec_(app)
out["job"] = job.job_id
print(json.dumps(out))
