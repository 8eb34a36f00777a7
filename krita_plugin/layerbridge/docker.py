"""The "Layer Decomposition" docker."""

from typing import Callable, Dict, Optional, Tuple

from krita import DockWidget, Krita

from . import protocol, settings
from .client import Api, StatusProbe
from .decompose import Decomposition
from .qt import Qt, QtCore, QtWidgets, enum

DOCKER_ID = "layerbridge_docker"
CAPTION_SHOWN = 160  # characters of the model's description shown; all of it in the tooltip
TITLE = "Layer Decomposition"
WORKING, PROBLEM, FINE = "#4a90d9", "#c33", "#3a3"     # the server works (not a warning), cannot work, is ready
COLOURS = {"ready": FINE, "busy": WORKING, "loading": WORKING, "downloading": WORKING,
           "not_running": PROBLEM, "unauthorized": PROBLEM, "protocol_mismatch": PROBLEM, "failed": PROBLEM,
           "error": PROBLEM, "checking": "#888"}
LANGUAGES = {"en": "English", "zh": "Chinese"}
LONGEST_UNBROKEN = 18   # characters of a word after which a line may break (a path, a URL, a long compound)


def _read(group: str, key: str) -> str:
    return Krita.instance().readSetting(group, key, "")


def _write(group: str, key: str, value: str) -> None:
    Krita.instance().writeSetting(group, key, value)


def breakable(text: str) -> str:
    """`text` with a zero-width space every LONGEST_UNBROKEN characters of a long word: a word-wrapped label breaks
    it there instead of clipping it at the docker's edge."""
    words = []
    for word in text.split(" "):
        if len(word) > LONGEST_UNBROKEN:
            word = "\u200b".join(word[i:i + LONGEST_UNBROKEN] for i in range(0, len(word), LONGEST_UNBROKEN))
        words.append(word)
    return " ".join(words)


def _label_and_button(lay: "QtWidgets.QBoxLayout", text: str, tip: str, clicked: Callable[[], None],
                      wrap: bool = True) -> Tuple["QtWidgets.QLabel", "QtWidgets.QPushButton"]:
    """Rows of `lay` for a text and its button. A wrapping text (a description, an error) takes the docker's whole
    width, the button under it at the right; a short one (wrap=False) shares its row with the button. The label asks
    for no width of its own: a long text wraps in the docker as it is instead of widening it."""
    label = QtWidgets.QLabel("")
    label.setWordWrap(wrap)
    policy = QtWidgets.QSizePolicy
    label.setSizePolicy(enum(policy, "Policy.Ignored"), enum(policy, "Policy.Preferred"))
    button = QtWidgets.QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(clicked)
    row = QtWidgets.QHBoxLayout()
    if wrap:
        lay.addWidget(label)
        row.addStretch(1)
    else:
        row.addWidget(label, 1)
    row.addWidget(button)
    lay.addLayout(row)
    return label, button


class LayerDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(TITLE)
        self.setObjectName(DOCKER_ID)
        self.options = protocol.job_options(None)      # the server's, once it has said hello
        self.values = settings.load(_read)
        self.run: Optional[Decomposition] = None
        self.probe: Optional[StatusProbe] = None
        self.details = ""
        self.limits: dict = {}      # the server's, from the last status check
        self.rows: Dict[str, Tuple["QtWidgets.QLabel", "QtWidgets.QWidget"]] = {}
        self._loading = True
        self._build()
        self._apply_options(self.options)
        self._load_values()
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.refresh_status)
        self.timer.start(5000)
        QtCore.QTimer.singleShot(0, self.refresh_status)

    # -- layout -----------------------------------------------------------------------------------
    def _option_row(self, form: "QtWidgets.QFormLayout", key: str, label: str, field: "QtWidgets.QWidget",
                    tip: str = "") -> "QtWidgets.QWidget":
        """One labelled option of `form`, kept in `rows` under `key`. Its field takes the row's width; its tip goes
        on the label and the field."""
        name = QtWidgets.QLabel(label)
        if tip:
            name.setToolTip(tip)
            field.setToolTip(tip)
        field.setSizePolicy(enum(QtWidgets.QSizePolicy, "Policy.Expanding"), field.sizePolicy().verticalPolicy())
        field.setMinimumWidth(60)
        form.addRow(name, field)
        self.rows[key] = (name, field)
        return field

    @staticmethod
    def _form() -> "QtWidgets.QFormLayout":
        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(enum(QtWidgets.QFormLayout, "FieldGrowthPolicy.AllNonFixedFieldsGrow"))
        form.setRowWrapPolicy(enum(QtWidgets.QFormLayout, "RowWrapPolicy.DontWrapRows"))
        return form

    def _build(self) -> None:
        root = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(root)
        lay.setContentsMargins(6, 6, 6, 6)

        status_row = QtWidgets.QHBoxLayout()
        self.dot = QtWidgets.QLabel("●")
        self.status = QtWidgets.QLabel("Checking the server…")
        self.status.setWordWrap(True)
        self.status.setSizePolicy(enum(QtWidgets.QSizePolicy, "Policy.Ignored"),
                                  enum(QtWidgets.QSizePolicy, "Policy.Preferred"))
        self.retry = QtWidgets.QPushButton("Retry")
        self.retry.setToolTip("Check the connection again")
        self.retry.clicked.connect(self.refresh_status)
        status_row.addWidget(self.dot)
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.retry)
        lay.addLayout(status_row)

        form = self._form()
        self.layers = self._option_row(form, "layers", "Layers", QtWidgets.QSpinBox(),
                                       "How many layers the picture is split into")
        self.resolution = self._option_row(form, "resolution", "Resolution", QtWidgets.QComboBox(),
                                           "The size the model works at: larger is slower and finer")
        self.steps = self._option_row(form, "steps", "Steps", QtWidgets.QSpinBox(),
                                      "Denoising steps: fewer is faster. auto: as many as the preset in Advanced uses.")
        self.steps.setSpecialValueText("auto")       # its minimum, one below the fewest steps: the preset's count
        self.prompt = self._option_row(form, "prompt", "Prompt", QtWidgets.QLineEdit())
        self.prompt.setPlaceholderText("optional: describe the whole image")
        self.seed = self._option_row(form, "seed", "Seed", QtWidgets.QSpinBox(),
                                     "The same seed and settings give the same layers again")
        self.seed.setRange(-1, 2147483647)
        self.seed.setSpecialValueText("random")
        self.text_layers = QtWidgets.QCheckBox("Text as editable text")
        self.text_layers.setToolTip("Text read in the layers comes back as live text layers, its pixels kept hidden "
                                    "right below")
        form.addRow("", self.text_layers)
        self.split_elements = QtWidgets.QCheckBox("One layer per element")
        self.split_elements.setToolTip("Each layer's separate elements (shapes, text blocks, icons) come back as a "
                                       "group of their own layers")
        form.addRow("", self.split_elements)
        lay.addLayout(form)

        self.advanced_button = QtWidgets.QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(enum(Qt, "ToolButtonStyle.ToolButtonTextBesideIcon"))
        self.advanced_button.toggled.connect(self._fold)
        lay.addWidget(self.advanced_button)
        self.advanced = QtWidgets.QWidget()
        adv = self._form()
        self.advanced.setLayout(adv)
        adv.setContentsMargins(0, 0, 0, 0)
        self.cfg = self._option_row(adv, "cfg_scale", "Guidance", QtWidgets.QDoubleSpinBox(),
                                    "How closely the layers follow the prompt")
        self.cfg.setSingleStep(0.5)
        self.cfg.setDecimals(1)
        self.preset = self._option_row(adv, "preset", "Preset", QtWidgets.QComboBox())
        self.language = self._option_row(adv, "caption_language", "Caption", QtWidgets.QComboBox(),
                                         "The language the model describes the picture in, without a prompt")
        self.restore = QtWidgets.QCheckBox("Full-resolution layers")
        adv.addRow("", self.restore)
        self.url = self._option_row(adv, "url", "Server", QtWidgets.QLineEdit())
        self.url.setPlaceholderText(settings.DEFAULT_URL)
        self.token = self._option_row(adv, "token", "Token", QtWidgets.QLineEdit())
        self.token.setEchoMode(enum(QtWidgets.QLineEdit, "EchoMode.Password"))
        self.token.setPlaceholderText("read automatically for this computer")
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
        self.split_button = QtWidgets.QPushButton("Split layer")
        self.split_button.setToolTip("Split the active layer into a group of its separate elements, without the model "
                                     "(works while a decomposition runs)")
        self.split_button.clicked.connect(self.split)
        self.splitting: Optional[Decomposition] = None
        self.split_message = ""
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.decompose_button)
        buttons.addWidget(self.layer_button)
        lay.addLayout(buttons)
        lay.addWidget(self.split_button)

        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(False)
        progress = QtWidgets.QHBoxLayout()       # Cancel next to what it stops
        progress.addWidget(self.bar, 1)
        progress.addWidget(self.cancel_button)
        lay.addLayout(progress)
        self.stage = QtWidgets.QLabel("")
        self.stage.setWordWrap(True)
        self.stage.setSizePolicy(enum(QtWidgets.QSizePolicy, "Policy.Ignored"),
                                 enum(QtWidgets.QSizePolicy, "Policy.Preferred"))
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
        # in a scroll area: rows keep their height in a short docker (it scrolls) and the docker asks Krita for
        # no more height than a row, leaving room to the dockers around it
        scroll = QtWidgets.QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(enum(QtWidgets.QFrame, "Shape.NoFrame"))
        scroll.setHorizontalScrollBarPolicy(enum(Qt, "ScrollBarPolicy.ScrollBarAlwaysOff"))
        scroll.setWidget(root)
        self.scroll = scroll
        self.setWidget(scroll)

        for w in (self.layers, self.steps, self.seed, self.cfg):
            w.valueChanged.connect(self._save)
        for w in (self.resolution, self.preset, self.language):
            w.currentIndexChanged.connect(self._save)
        self.prompt.editingFinished.connect(self._save)
        for box in (self.restore, self.text_layers, self.split_elements):
            box.toggled.connect(self._save)

    def _apply_options(self, options: dict) -> None:
        """The controls' ranges and choices from the job options the server announces (protocol.job_options),
        the chosen values kept where the server still offers them."""
        self.options = options
        loading, self._loading = self._loading, True
        layers = options["layers"]
        self.layers.setRange(layers["min"], layers["max"])
        steps = options["steps"]
        self.steps.setRange(max(1, steps["min"] - 1), steps["max"])     # its minimum shows "auto"
        cfg = options["cfg_scale"]
        self.cfg.setRange(cfg["min"], cfg["max"])
        self.resolution.clear()
        for r in options["resolution"]["choices"]:
            self.resolution.addItem(str(r), r)
        self.preset.clear()
        for i, p in enumerate(options["presets"]):
            self.preset.addItem(p["label"], p["name"])
            summary = p["summary"] or ("%s steps" % p["steps"] if p.get("steps") else "")
            self.preset.setItemData(i, summary, enum(Qt, "ItemDataRole.ToolTipRole"))
        self.preset.setToolTip("Speed against quality; Steps on auto uses the preset's count")
        self.language.clear()
        for code in options["caption_language"]["choices"]:
            self.language.addItem(LANGUAGES.get(code, code), code)
        self._loading = loading
        if not loading:
            self.values = settings.normalize(self.values, options)
            self._load_values()

    def _fold(self, open_: bool) -> None:
        self.advanced.setVisible(open_)
        self.advanced_button.setArrowType(enum(Qt, "ArrowType.DownArrow") if open_ else enum(Qt, "ArrowType.RightArrow"))
        self._save()

    def _load_values(self) -> None:
        v = self.values
        self._loading = True
        self.layers.setValue(int(v["layers"]))
        self.resolution.setCurrentIndex(max(0, self.resolution.findData(v["resolution"])))
        self.steps.setValue(max(self.steps.minimum(), int(v["steps"])))
        self.prompt.setText(str(v["prompt"]))
        self.seed.setValue(int(v["seed"]) if int(v["seed"]) <= 2147483647 else -1)
        self.cfg.setValue(float(v["cfg_scale"]))
        self.preset.setCurrentIndex(max(0, self.preset.findData(v["preset"])))
        self.language.setCurrentIndex(max(0, self.language.findData(v["caption_language"])))
        self.restore.setChecked(bool(v["restore"]))
        self.text_layers.setChecked(bool(v["text_layers"]))
        self.split_elements.setChecked(bool(v["split_elements"]))
        self.url.setText(str(v["url"]))
        self.token.setText(str(v["token"]))
        self.advanced_button.setChecked(bool(v["advanced_open"]))
        self._fold(bool(v["advanced_open"]))
        self._loading = False

    def collect(self) -> dict:
        """The docker's values, normalised (once, here) against the server's job options."""
        steps = self.steps.value()
        return settings.normalize({
            "url": self.url.text(), "token": self.token.text(), "layers": self.layers.value(),
            "resolution": self.resolution.currentData(), "steps": 0 if steps == self.steps.minimum() else steps,
            "prompt": self.prompt.text(), "seed": self.seed.value(), "cfg_scale": self.cfg.value(),
            "preset": self.preset.currentData(), "caption_language": self.language.currentData(),
            "restore": self.restore.isChecked(), "text_layers": self.text_layers.isChecked(),
            "split_elements": self.split_elements.isChecked(), "advanced_open": self.advanced_button.isChecked(),
        }, self.options)

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
            if probe.hello is not None:
                options = protocol.job_options(probe.hello)
                if options != self.options:
                    self._apply_options(options)
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

    def split(self) -> None:
        """The active layer split into its elements by the server's split task, beside any decomposition running."""
        if self.splitting is not None:
            return
        self._save()
        values = self.collect()
        run = Decomposition(Krita.instance().activeDocument(), "split", values, str(values["url"]),
                            settings.effective_token(values), self, limits=self.limits)
        self.splitting = run
        self.split_button.setEnabled(False)

        def ended(text: str) -> None:
            self.splitting = None
            self.split_button.setEnabled(True)
            self.split_message = text
            if self.run is None:        # else the decomposition's progress holds the line
                self.stage.setText(text)
            run.deleteLater()

        run.finished.connect(lambda group: ended(run.note or "Split “%s” into %d layers. Undo restores it."
                                                 % (group.name(), len(group.childNodes()))))
        run.failed.connect(lambda code, text, details: (ended(""), self._show_error(text, details)))
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
        self.last_caption.setText(breakable("Described as: “%s”" % (text if len(text) <= CAPTION_SHOWN else
                                                                    text[:CAPTION_SHOWN].rstrip() + "…")))
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
        if self.run is not None and self.run.mode == "layer" and not note and self.run.source is not None:
            note = "“%s” is hidden under it; Undo shows it again." % self.run.source.name
        if self.run is not None:
            note = " ".join([note] + list(self.run.notes) + [str(n) for n in self.run.result.get("notes") or ()]).strip()
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
        self.error.setText(breakable(text))
        self.error.setVisible(bool(text))
        self.copy.setVisible(bool(text))

    def copy_details(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self.details)

    def canvasChanged(self, canvas: object) -> None:
        pass
