// The workflow editor: CodeMirror 6 over the page's <textarea>, validated as you type.
//
// The page works without this file: the textarea is a plain form field, and "Check" posts the
// form and gets the same problems list and preview back in a whole page. With it, the textarea is
// hidden behind a code editor, and 300 ms after typing stops the text goes to the page's validate
// URL, which answers the same server-rendered fragment (problems list and graph preview, every
// text in it escaped by Django). The fragment's problems carry their line and column, which become
// the editor's lint markers; a click on a problem or on a box of the preview moves the cursor there.

import { EditorView, basicSetup } from "codemirror";
import { insertCompletionText, startCompletion } from "@codemirror/autocomplete";
import { indentWithTab } from "@codemirror/commands";
import { yaml, yamlLanguage } from "@codemirror/lang-yaml";
import { syntaxTree } from "@codemirror/language";
import { lintGutter, setDiagnostics } from "@codemirror/lint";
import { keymap } from "@codemirror/view";

const DEBOUNCE_MS = 300;

// CodeMirror styles itself with <style> elements; the page's Content-Security-Policy admits them
// only with the nonce its <script> tag carries (read now: currentScript is gone once it has run).
const STYLE_NONCE = document.currentScript ? document.currentScript.nonce : "";

// Lines and columns from the server are 1-based and count characters (code points), as Python
// does; CodeMirror positions count UTF-16 units, which differ after an astral character (an emoji).
function position(doc, line, column) {
  const row = doc.line(Math.min(Math.max(line || 1, 1), doc.lines));
  const units = Array.from(row.text).slice(0, Math.max((column || 1) - 1, 0)).join("").length;
  return row.from + Math.min(units, row.length);
}

function diagnostics(doc, feedback) {
  return Array.from(feedback.querySelectorAll("[data-problem]")).map((item) => {
    const from = position(doc, Number(item.dataset.line), Number(item.dataset.column));
    // a problem about a whole node spans many lines: mark its first line, the list says the rest
    const end = position(doc, Number(item.dataset.endLine), Number(item.dataset.endColumn));
    const to = Math.max(from, Math.min(end, doc.lineAt(from).to));
    return { from, to, severity: "error", message: item.dataset.message, source: item.dataset.pointer || "definition" };
  });
}

// Completion: field names where a key goes; after "type:", "tool:", "model:" and the like, the names
// those fields take (the page's vocabulary, from the server); node ids after "nodes." and in the
// fields that name nodes (depends_on, routes, ...), read from the text itself.
function nodeIds(text) {
  return Array.from(new Set(Array.from(text.matchAll(/^\s*-?\s*id:\s*["']?([a-z][a-z0-9_]*)/gm), (m) => m[1])));
}

function completionSource(vocabulary) {
  const named = new Set([...Object.keys(vocabulary.values), ...vocabulary.node_fields]);
  // a key whose values have names: write "key: " and offer them at once
  const applyKey = (key) => (view, completion, from, to) => {
    view.dispatch(insertCompletionText(view.state, `${key}: `, from, to));
    if (named.has(key)) setTimeout(() => startCompletion(view), 0);
  };
  const keys = vocabulary.keys.map((key) => ({ label: key, type: "property", apply: applyKey(key) }));
  return (context) => {
    const reference = context.matchBefore(/nodes\.[a-z0-9_]*/);
    if (reference) {
      const options = nodeIds(context.state.doc.toString()).map((id) => ({ label: id, type: "variable" }));
      return { from: reference.from + "nodes.".length, options, validFor: /^[a-z0-9_]*$/ };
    }
    const word = context.matchBefore(/[\w.-]*/);
    if (!word || (word.from === word.to && !context.explicit)) return null;
    const line = context.state.doc.lineAt(context.pos);
    const before = line.text.slice(0, word.from - line.from);
    const field = before.match(/^\s*(?:-\s+)?([a-z_]+):\s*(?:\[[^\]]*)?(?:,\s*)?$/);
    if (field) {
      const name = field[1];
      const names = vocabulary.node_fields.includes(name) ? nodeIds(context.state.doc.toString()) : vocabulary.values[name];
      if (!names) return null;
      return { from: word.from, options: names.map((label) => ({ label, type: "constant" })), validFor: /^[\w.-]*$/ };
    }
    if (!/^\s*(?:-\s+)?$/.test(before)) return null;
    // not inside a block scalar (a prompt written with "|"), where a line start is text, not a key
    for (let node = syntaxTree(context.state).resolveInner(context.pos, -1); node; node = node.parent) {
      if (node.name === "BlockLiteral" || node.name === "BlockLiteralContent") return null;
    }
    return { from: word.from, options: keys, validFor: /^\w*$/ };
    return null;
  };
}

function uniqueId(text, base) {
  const taken = new Set(nodeIds(text));
  if (!taken.has(base)) return base;
  let n = 2;
  while (taken.has(`${base}_${n}`)) n += 1;
  return `${base}_${n}`;
}

function start(textarea) {
  const form = textarea.form;
  const validateUrl = textarea.dataset.validateUrl;
  const status = document.getElementById("validation-status");
  const vocabularyScript = document.getElementById("editor-vocabulary");
  const vocabulary = vocabularyScript ? JSON.parse(vocabularyScript.textContent) : null;
  let saved = textarea.value;
  let leaving = false;
  let timer = null;
  let sent = 0;
  let inFlight = null;

  const save = () => {
    const button = form.querySelector("button[name=action][value=save]");
    if (button) form.requestSubmit(button);
    return true;
  };

  const view = new EditorView({
    doc: textarea.value,
    extensions: [
      ...(STYLE_NONCE ? [EditorView.cspNonce.of(STYLE_NONCE)] : []),
      basicSetup,
      keymap.of([indentWithTab, { key: "Mod-s", run: save, preventDefault: true }]),
      yaml(),
      ...(vocabulary ? [yamlLanguage.data.of({ autocomplete: completionSource(vocabulary) })] : []),
      lintGutter(),
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({ "aria-label": "Workflow definition (YAML)" }),
      EditorView.updateListener.of((update) => {
        if (!update.docChanged) return;
        document.body.classList.toggle("editor-dirty", update.state.doc.toString() !== saved);
        clearTimeout(timer);
        timer = setTimeout(validate, DEBOUNCE_MS);
        if (status) status.textContent = "Checking…";
      }),
    ],
  });
  textarea.hidden = true;
  document.querySelectorAll("[data-needs-js]").forEach((element) => {
    element.hidden = false;
  });
  textarea.insertAdjacentElement("afterend", view.dom);
  view.dom.id = "definition-editor";

  const goTo = (line, column) => {
    const pos = position(view.state.doc, line, column);
    view.dispatch({ selection: { anchor: pos }, effects: EditorView.scrollIntoView(pos, { y: "center" }) });
    view.focus();
  };

  async function validate() {
    const text = view.state.doc.toString();
    const mine = ++sent;
    const body = new URLSearchParams({ text });
    if (inFlight) inFlight.abort(); // its answer would be thrown away: the text has changed
    inFlight = new AbortController();
    let answer;
    try {
      const response = await fetch(validateUrl, {
        method: "POST",
        body,
        signal: inFlight.signal,
        headers: { "X-CSRFToken": form.querySelector("input[name=csrfmiddlewaretoken]").value, "HX-Request": "true" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      // signed out meanwhile: the answer is the login page (the text stays here until you leave)
      if (response.redirected) throw new Error("signed out: sign in again in another tab, then save");
      answer = await response.text();
    } catch (error) {
      if (error.name === "AbortError") return;
      if (mine === sent && status) status.textContent = `Could not check the definition (${error.message}); saving still checks it.`;
      return;
    }
    // an older answer, or one about a text that has changed since: the next answer is on its way
    if (mine !== sent || view.state.doc.toString() !== text) return;
    const fresh = new DOMParser().parseFromString(answer, "text/html").getElementById("editor-feedback");
    const current = document.getElementById("editor-feedback");
    if (!fresh || !current) return;
    current.replaceWith(document.importNode(fresh, true));
    view.dispatch(setDiagnostics(view.state, diagnostics(view.state.doc, fresh)));
    if (status) status.textContent = fresh.dataset.summary || "";
  }

  // problems and preview boxes: a click moves the cursor to what they point at
  document.addEventListener("click", (event) => {
    const target = event.target.closest("[data-goto-line]");
    if (!target) return;
    event.preventDefault();
    goTo(Number(target.dataset.gotoLine), Number(target.dataset.gotoColumn));
  });

  // snippets: a node of each type appended to the nodes list (the definition's last key)
  document.querySelectorAll("[data-snippet]").forEach((button) => {
    button.addEventListener("click", (event) => {
      event.preventDefault();
      const template = document.getElementById(button.dataset.snippet);
      const text = view.state.doc.toString();
      const id = uniqueId(text, button.dataset.nodeId);
      const snippet = template.content.textContent.replaceAll(button.dataset.nodeId, id);
      const prefix = text.endsWith("\n") || text === "" ? "" : "\n";
      const from = view.state.doc.length;
      const insert = prefix + snippet.replace(/^\n+/, "");
      const idAt = from + insert.indexOf(id);
      view.dispatch({ changes: { from, insert }, selection: { anchor: idAt, head: idAt + id.length }, scrollIntoView: true });
      view.focus();
    });
  });

  form.addEventListener("submit", () => {
    textarea.value = view.state.doc.toString();
    leaving = true;
  });
  window.addEventListener("beforeunload", (event) => {
    if (leaving || view.state.doc.toString() === saved) return;
    event.preventDefault();
    event.returnValue = "";
  });
  // Ctrl/Cmd-S outside the editor too (on a button, in the problems list)
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "s" && !view.hasFocus) {
      event.preventDefault();
      save();
    }
  });

  // the page came with problems (a no-JS check, a refused save): mark them at once
  const feedback = document.getElementById("editor-feedback");
  if (feedback) view.dispatch(setDiagnostics(view.state, diagnostics(view.state.doc, feedback)));
  window.dagwrightEditor = {
    view,
    goTo,
    markSaved: () => {
      saved = view.state.doc.toString();
    },
  };
}

const textarea = document.querySelector("textarea[data-validate-url]");
if (textarea) start(textarea);
