// Which installed Photoshop font sets a text block: the server names the closest family on its own
// machine and a generic class (docs/text.md); here that becomes a PostScript name from app.fonts
// (TextFont: family, style, postScriptName), the same family when it is installed, else a
// metric-compatible one, else a common font of the same class. Pure: the font list is handed in.
"use strict";

// Families whose glyphs have the same widths as a common Windows/macOS font: the server often runs on
// Linux, where these stand in for the fonts designers use.
const EQUIVALENTS = Object.freeze({
  "liberation sans": ["Arial", "Helvetica"],
  "liberation sans narrow": ["Arial Narrow"],
  "liberation serif": ["Times New Roman", "Times"],
  "liberation mono": ["Courier New", "Courier"],
  "nimbus sans": ["Helvetica", "Arial"],
  "nimbus sans l": ["Helvetica", "Arial"],
  "nimbus sans narrow": ["Helvetica Narrow", "Arial Narrow"],
  "nimbus roman": ["Times", "Times New Roman"],
  "nimbus roman no9 l": ["Times", "Times New Roman"],
  "nimbus mono ps": ["Courier", "Courier New"],
  "nimbus mono l": ["Courier", "Courier New"],
  "tex gyre heros": ["Helvetica", "Arial"],
  "tex gyre termes": ["Times", "Times New Roman"],
  "tex gyre cursor": ["Courier", "Courier New"],
  "tex gyre pagella": ["Palatino", "Palatino Linotype", "Book Antiqua"],
  "p052": ["Palatino", "Palatino Linotype", "Book Antiqua"],
  "c059": ["Century Schoolbook", "New Century Schoolbook"],
  "urw bookman": ["ITC Bookman", "Bookman Old Style"],
  "urw gothic": ["ITC Avant Garde Gothic", "Century Gothic"],
  "z003": ["ITC Zapf Chancery", "Apple Chancery"],
  "dejavu sans": ["Verdana", "Bitstream Vera Sans"],
  "dejavu serif": ["Bitstream Vera Serif", "Georgia"],
  "dejavu sans mono": ["Menlo", "Bitstream Vera Sans Mono", "Consolas"],
  "carlito": ["Calibri"],
  "caladea": ["Cambria"],
});

// Common fonts of each class (docs/text.md: sans-serif, serif, monospace, display, script), in the order
// tried; Myriad Pro and Minion Pro come with Photoshop itself.
const BY_CLASS = Object.freeze({
  "sans-serif": ["Arial", "Helvetica", "Helvetica Neue", "Myriad Pro", "Segoe UI", "Verdana", "Roboto", "Open Sans",
    "Source Sans Pro", "Source Sans 3", "Noto Sans", "DejaVu Sans", "Liberation Sans", "Tahoma"],
  serif: ["Times New Roman", "Times", "Minion Pro", "Georgia", "Adobe Garamond Pro", "Garamond", "Cambria", "Palatino",
    "Book Antiqua", "Noto Serif", "DejaVu Serif", "Liberation Serif"],
  monospace: ["Courier New", "Courier", "Consolas", "Menlo", "Monaco", "Source Code Pro", "DejaVu Sans Mono",
    "Liberation Mono"],
  display: ["Impact", "Arial Black", "Bebas Neue", "Futura", "Rockwell", "Cooper Black", "Haettenschweiler"],
  script: ["Brush Script MT", "Brush Script Std", "Segoe Script", "Snell Roundhand", "Apple Chancery",
    "Lucida Handwriting", "Zapfino"],
});

// For text in Chinese (and other CJK scripts) a font that has its characters, whatever the class.
const CJK = Object.freeze({
  serif: ["Adobe Song Std", "Songti SC", "SimSun", "Source Han Serif SC", "Noto Serif CJK SC", "Noto Serif SC"],
  other: ["Microsoft YaHei", "PingFang SC", "Adobe Heiti Std", "Heiti SC", "Source Han Sans SC", "Noto Sans CJK SC",
    "Noto Sans SC", "SimHei"],
});
const CJK_TEXT = /[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/;

const BOLD_STYLE = /bold|black|heavy|semibold|demibold|extrabold|ultrabold/i;
const ITALIC_STYLE = /italic|oblique|kursiv/i;
const PLAIN_STYLE = /^(regular|roman|book|normal|plain|medium|standard)$/i;

const key = (family) => String(family || "").trim().toLowerCase();

/** Installed fonts grouped by family (lower case): [{family, style, postScriptName}, ...]. */
function fontIndex(fonts) {
  const byFamily = new Map();
  const count = fonts && Number.isInteger(fonts.length) ? fonts.length : 0;
  for (let i = 0; i < count; i++) {
    const f = fonts[i];
    if (!f || typeof f.postScriptName !== "string" || !f.postScriptName) continue;
    const k = key(f.family);
    if (!byFamily.has(k)) byFamily.set(k, []);
    byFamily.get(k).push({ family: String(f.family), style: String(f.style || ""), postScriptName: f.postScriptName });
  }
  return byFamily;
}

/** The face of `faces` closest to bold/italic; whether faux bold or italic must make up for a missing face. */
function pickFace(faces, bold, italic) {
  let best = null;
  let bestScore = -Infinity;
  for (const face of faces) {
    const isBold = BOLD_STYLE.test(face.style);
    const isItalic = ITALIC_STYLE.test(face.style);
    let score = (isBold === bold ? 4 : 0) + (isItalic === italic ? 2 : 0);
    if (!bold && !italic && PLAIN_STYLE.test(face.style.trim())) score += 1;
    if (/^(regular|bold|italic|bold italic|roman)$/i.test(face.style.trim())) score += 0.5; // the family's main faces
    if (score > bestScore) {
      best = { face, fauxBold: bold && !isBold, fauxItalic: italic && !isItalic };
      bestScore = score;
    }
  }
  return best;
}

/**
 * The font to set a text block in.
 * @param {object} fonts  app.fonts (TextFonts: indexable, `length`), or an index made by fontIndex
 * @param {{family: string, class: string, bold: boolean, italic: boolean}} wanted  the block's `font`
 * @param {string} text  the block's text (CJK text needs a CJK font)
 * @returns {{postScriptName, family, style, fauxBold, fauxItalic, substituted: boolean}|null}  null: no
 *   installed font fits (the block then stays pixels)
 */
function chooseFont(fonts, wanted, text = "") {
  const index = fonts instanceof Map ? fonts : fontIndex(fonts);
  const bold = Boolean(wanted && wanted.bold);
  const italic = Boolean(wanted && wanted.italic);
  const family = wanted && typeof wanted.family === "string" ? wanted.family : "";
  const cls = wanted && BY_CLASS[wanted.class] ? wanted.class : "sans-serif";
  const cjk = CJK_TEXT.test(text);
  const exact = [family];
  const candidates = [
    ...(EQUIVALENTS[key(family)] || []),
    ...(cjk ? (cls === "serif" ? [...CJK.serif, ...CJK.other] : [...CJK.other, ...CJK.serif]) : BY_CLASS[cls]),
  ];
  for (const [names, substituted] of [[exact, false], [candidates, true]]) {
    for (const name of names) {
      const faces = index.get(key(name));
      if (!faces || !faces.length) continue;
      const { face, fauxBold, fauxItalic } = pickFace(faces, bold, italic);
      return { postScriptName: face.postScriptName, family: face.family, style: face.style, fauxBold, fauxItalic, substituted };
    }
  }
  return null;
}

module.exports = { chooseFont, fontIndex, EQUIVALENTS, BY_CLASS };
