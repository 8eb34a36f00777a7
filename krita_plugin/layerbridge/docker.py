"""The "Layer Decomposition" docker."""

from typing import Callable, Optional, Tuple

from krita import DockWidget, Krita

from . import settings
from .client import Api, StatusProbe
from .decompose import Decomposition
from .qt import Qt, QtCore, QtWidgets, enum

DOCKER_ID = "layerbridge_docker"
CAPTION_SHOWN = 160  # characters of the model's description shown; all of it in the tooltip
TITLE = "Layer Decomposition"
COLOURS = {"ready": "#3a3", "busy": "#c90", "loading": "#c90", "downloading": "#c90",
           "not_running": "#c33", "unauthorized": "#c33", "protocol_mismatch": "#c33", "failed": "#c33",
           "error": "#c33", "checking": "#888"}


def _read(group: str, key: str) -> str:
    return Krita.instance().readSetting(group, key, "")


def _write(group: str, key: str, value: str) -> None:
    Krita.instance().writeSetting(group, key, value)


def _label_and_button(lay: "QtWidgets.QBoxLayout", text: str, tip: str, clicked: Callable[[], None],
                      wrap: bool = True) -> Tuple["QtWidgets.QLabel", "QtWidgets.QPushButton"]:
    """A row of `lay`: a label taking the width (wrapping its text, unless told not to), and a button at its end.
    The label asks for no width of its own: a long text (a description, an error) wraps in the docker as it is
    instead of widening it."""
    row = QtWidgets.QHBoxLayout()
    label = QtWidgets.QLabel("")
    label.setWordWrap(wrap)
    policy = QtWidgets.QSizePolicy
    label.setSizePolicy(enum(policy, "Policy.Ignored"), enum(policy, "Policy.Preferred"))
    button = QtWidgets.QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(clicked)
    row.addWidget(label, 1)
    row.addWidget(button)
    lay.addLayout(row)
    return label, button


class LayerDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(TITLE)
        self.setObjectName(DOCKER_ID)
        self.values = settings.load(_read)
        self.run: Optional[Decomposition] = None
        self.probe: Optional[StatusProbe] = None
        self.details = ""
        self.limits: dict = {}      # the server's, from the last status check
        self._build()
        self._load_values()
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh_status)
        self.timer.start(5000)
        QtCore.QTimer.singleShot(0, self.refresh_status)

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QtWidgets.QWidget(self)
        lay = QtWidgets.QVBoxLayout(root)
        lay.setContentsMargins(6, 6, 6, 6)

        status_row = QtWidgets.QHBoxLayout()
        self.dot = QtWidgets.QLabel("●")
        self.status = QtWidgets.QLabel("Checking the server…")
        self.status.setWordWrap(True)
        self.retry = QtWidgets.QPushButton("Retry")
        self.retry.setToolTip("Check the connection again")
        self.retry.clicked.connect(self.refresh_status)
        status_row.addWidget(self.dot)
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.retry)
        lay.addLayout(status_row)

        form = QtWidgets.QFormLayout()
        self.layers = QtWidgets.QSpinBox()
        self.layers.setRange(2, 10)
        self.resolution = QtWidgets.QComboBox()
        for r in settings.RESOLUTIONS:
            self.resolution.addItem(str(r), r)
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, 100)             # 1 shows "auto": the preset's count
        self.steps.setSpecialValueText("auto")
        self.steps.setToolTip("Denoising steps: fewer is faster. auto: as many as the preset in Advanced uses.")
        self.prompt = QtWidgets.QLineEdit()
        self.prompt.setPlaceholderText("optional: describe the whole image")
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(-1, 2147483647)
        self.seed.setSpecialValueText("random")
        form.addRow("Layers", self.layers)
        form.addRow("Resolution", self.resolution)
        form.addRow("Steps", self.steps)
        form.addRow("Prompt", self.prompt)
        form.addRow("Seed", self.seed)
        lay.addLayout(form)

        self.advanced_button = QtWidgets.QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(enum(Qt, "ToolButtonStyle.ToolButtonTextBesideIcon"))
        self.advanced_button.toggled.connect(self._fold)
        lay.addWidget(self.advanced_button)
        self.advanced = QtWidgets.QWidget()
        adv = QtWidgets.QFormLayout(self.advanced)
        adv.setContentsMargins(0, 0, 0, 0)
        self.cfg = QtWidgets.QDoubleSpinBox()
        self.cfg.setRange(1.0, 20.0)
        self.cfg.setSingleStep(0.5)
        self.preset = QtWidgets.QComboBox()
        self.preset.addItems(list(settings.PRESETS))
        self.language = QtWidgets.QComboBox()
        self.language.addItem("English", "en")
        self.language.addItem("Chinese", "zh")
        self.restore = QtWidgets.QCheckBox("Full-resolution layers")
        self.url = QtWidgets.QLineEdit()
        self.url.setPlaceholderText(settings.DEFAULT_URL)
        self.token = QtWidgets.QLineEdit()
        self.token.setEchoMode(enum(QtWidgets.QLineEdit, "EchoMode.Password"))
        self.token.setPlaceholderText("read automatically for this computer")
        adv.addRow("Guidance", self.cfg)
        adv.addRow("Preset", self.preset)
        adv.addRow("Caption", self.language)
        adv.addRow("", self.restore)
        adv.addRow("Server", self.url)
        adv.addRow("Token", self.token)
        lay.addWidget(self.advanced)
        self.url.editingFinished.connect(self._connection_changed)
        self.token.editingFinished.connect(self._connection_changed)

        buttons = QtWidgets.QHBoxLayout()
        self.decompose_button = QtWidgets.QPushButton("Decompose")
        self.decompose_button.setToolTip("Split the visible image (or the selected area) into layers")
        self.decompose_button.clicked.connect(lambda: self.decompose("image"))
        self.layer_button = QtWidgets.QPushButton("Decompose layer")
        self.layer_button.setToolTip("Split the active layer further; its group goes right above it")
        self.layer_button.clicked.connect(lambda: self.decompose("layer"))
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.decompose_button)
        buttons.addWidget(self.layer_button)
        buttons.addWidget(self.cancel_button)
        lay.addLayout(buttons)

        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        self.stage = QtWidgets.QLabel("")
        self.stage.setWordWrap(True)
        lay.addWidget(self.bar)
        lay.addWidget(self.stage)
        self.last_seed, self.reuse_seed = _label_and_button(
            lay, "Reuse", "Put this seed in Seed: the same settings give the same layers again", self._reuse_seed,
            wrap=False)
        self.last_caption, self.use_caption = _label_and_button(
            lay, "Use as prompt", "Put this description in Prompt, to correct or complete it for the next run",
            self._use_caption)
        self._show_result(None)

        self.error, self.copy = _label_and_button(lay, "Copy details", "", self.copy_details)
        self.error.setStyleSheet("color: #d55;")
        self._show_error("", "")
        lay.addStretch(1)
        self.setWidget(root)

        for w in (self.layers, self.steps, self.seed, self.cfg):
            w.valueChanged.connect(self._save)
        for w in (self.resolution, self.preset, self.language):
            w.currentIndexChanged.connect(self._save)
        self.prompt.editingFinished.connect(self._save)
        self.restore.toggled.connect(self._save)

    def _fold(self, open_: bool) -> None:
        self.advanced.setVisible(open_)
        self.advanced_button.setArrowType(enum(Qt, "ArrowType.DownArrow") if open_ else enum(Qt, "ArrowType.RightArrow"))
        self._save()

    def _load_values(self) -> None:
        v = self.values
        self._loading = True
        self.layers.setValue(int(v["layers"]))
        self.resolution.setCurrentIndex(max(0, self.resolution.findData(v["resolution"])))
        self.steps.setValue(max(1, int(v["steps"])))
        self.prompt.setText(str(v["prompt"]))
        self.seed.setValue(int(v["seed"]) if int(v["seed"]) <= 2147483647 else -1)
        self.cfg.setValue(float(v["cfg_scale"]))
        self.preset.setCurrentText(str(v["preset"]))
        self.language.setCurrentIndex(max(0, self.language.findData(v["caption_language"])))
        self.restore.setChecked(bool(v["restore"]))
        self.url.setText(str(v["url"]))
        self.token.setText(str(v["token"]))
        self.advanced_button.setChecked(bool(v["advanced_open"]))
        self._fold(bool(v["advanced_open"]))
        self._loading = False

    def collect(self) -> dict:
        return settings.normalize({
            "url": self.url.text(), "token": self.token.text(), "layers": self.layers.value(),
            "resolution": self.resolution.currentData(), "steps": 0 if self.steps.value() < 2 else self.steps.value(),
            "prompt": self.prompt.text(), "seed": self.seed.value(), "cfg_scale": self.cfg.value(),
            "preset": self.preset.currentText(), "caption_language": self.language.currentData(),
            "restore": self.restore.isChecked(), "advanced_open": self.advanced_button.isChecked(),
        })

    def _save(self, *_: object) -> None:
        if getattr(self, "_loading", False):
            return
        self.values = self.collect()
        settings.save(_write, self.values)

    def _connection_changed(self) -> None:
        self.limits = {}
        self._save()
        self.refresh_status()

    # -- connection state -------------------------------------------------------------------------
    def _api(self) -> Api:
        values = self.collect()
        return Api(str(values["url"]), settings.effective_token(values), self)

    def refresh_status(self) -> None:
        if self.probe is not None:
            return
        probe = StatusProbe(self._api(), self)
        self.probe = probe

        def shown(kind: str, text: str, detail: str) -> None:
            self.probe = None
            self.limits = probe.limits
            probe.api.deleteLater()
            probe.deleteLater()
            self._set_status(kind, text, detail)

        probe.result.connect(shown)
        probe.run()

    def _set_status(self, kind: str, text: str, detail: str) -> None:
        self.status_kind = kind
        self.dot.setStyleSheet("color: %s;" % COLOURS.get(kind, "#888"))
        self.status.setText(text)
        self.status.setToolTip(detail)
        self.timer.setInterval(1500 if kind in ("loading", "downloading", "busy") else 5000)

    # -- decomposition ----------------------------------------------------------------------------
    def decompose(self, mode: str) -> None:
        if self.run is not None:
            # one at a time (the server runs one job at a time anyway); the menu entries reach here too
            self._show_error("A decomposition of “%s” is still running. Wait for it to finish, or cancel it."
                             % self.run.doc_name, "")
            return
        self._save()
        self._show_error("", "")
        values = self.collect()
        doc = Krita.instance().activeDocument()
        run = Decomposition(doc, mode, values, str(values["url"]), settings.effective_token(values), self,
                            limits=self.limits)
        self.run = run
        run.progress.connect(self._progress)
        run.finished.connect(self._finished)
        run.failed.connect(self._failed)
        self._busy(True)
        run.start()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _busy(self, busy: bool) -> None:
        self.decompose_button.setEnabled(not busy)
        self.layer_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.bar.setRange(0, 0)

    def _progress(self, text: str, fraction: object) -> None:
        self.stage.setText(text)
        if fraction is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * float(fraction)))

    def _show_result(self, result: Optional[dict], prompted: bool = False) -> None:
        """The last result's seed, with a button to run with it again, and, where the model described the picture
        itself (no prompt), that description, with a button to edit it as the prompt (None: no result yet)."""
        seed = (result or {}).get("seed")
        shown = isinstance(seed, int) and 0 <= seed <= self.seed.maximum()
        self.shown_seed = seed if shown else None
        self.last_seed.setText("Last seed: %d" % seed if shown else "")
        self.last_seed.setVisible(shown)
        self.reuse_seed.setVisible(shown)
        caption = (result or {}).get("caption")
        self.shown_caption = caption if isinstance(caption, str) and caption.strip() and not prompted else None
        text = self.shown_caption or ""
        self.last_caption.setText("Described as: “%s”" % (text if len(text) <= CAPTION_SHOWN else
                                                          text[:CAPTION_SHOWN].rstrip() + "…"))
        self.last_caption.setToolTip(text)
        self.last_caption.setVisible(bool(text))
        self.use_caption.setVisible(bool(text))

    def _use_caption(self) -> None:
        if self.shown_caption is not None:
            self.prompt.setText(self.shown_caption)
            self._save()

    def _reuse_seed(self) -> None:
        if self.shown_seed is not None:
            self.seed.setValue(self.shown_seed)         # saved, as any change of Seed is

    def _finished(self, group: object) -> None:
        note = self.run.note if self.run is not None else ""        # where the group went, if not the source
        if self.run is not None:
            self._show_result(self.run.result, prompted=bool(str(self.run.values.get("prompt") or "").strip()))
        self._end()
        self.bar.setRange(0, 1000)
        self.bar.setValue(1000)
        self.stage.setText(("Added “%s” with %d layers. %s" % (group.name(), len(group.childNodes()), note)).strip())

    def _failed(self, code: str, text: str, details: str) -> None:
        self._end()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        if code == "cancelled":
            self.stage.setText("Cancelled. The document is unchanged.")
            return
        self.stage.setText("")
        self._show_error(text, details)
        self.refresh_status()

    def _end(self) -> None:
        run, self.run = self.run, None
        if run is not None:
            run.deleteLater()
        self._busy(False)
        self._show_error("", "")

    def _show_error(self, text: str, details: str) -> None:
        self.details = details
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self.copy.setVisible(bool(text))

    def copy_details(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self.details)

    def canvasChanged(self, canvas: object) -> None:
        pass
