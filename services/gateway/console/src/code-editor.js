// The code editor: CodeMirror 6 with JavaScript or Python, line numbers, the deploy
// failure's line marked, and completion of Toolbelt members from the toolbelt typings.
import { useEffect, useRef } from 'preact/hooks';
import { EditorView, basicSetup } from 'codemirror';
import { Decoration } from '@codemirror/view';
import { StateEffect, StateField } from '@codemirror/state';
import { javascript, javascriptLanguage } from '@codemirror/lang-javascript';
import { python } from '@codemirror/lang-python';
import { TOOLBELT } from 'virtual:toolbelt';
import { html } from './ui.js';

// "Toolbelt.Se|" -> the static factories of class Toolbelt (generated at build time).
export function toolbeltCompletions(context) {
  const word = context.matchBefore(/Toolbelt\.\w*/);
  if (!word) return null;
  return {
    from: word.from + 'Toolbelt.'.length,
    options: TOOLBELT.map((m) => ({ label: m.name, type: 'method', detail: m.signature, info: m.doc || undefined,
                                    apply: m.name + '()' })),
    validFor: /^\w*$/,
  };
}

const setFailureLine = StateEffect.define();
const failureMark = Decoration.line({ class: 'cm-failure-line', attributes: { title: 'Deployment failed here' } });
const failureField = StateField.define({
  create: () => Decoration.none,
  update(marks, tr) {
    marks = marks.map(tr.changes);
    for (const e of tr.effects) {
      if (e.is(setFailureLine)) {
        const line = e.value;
        marks = line && line <= tr.state.doc.lines
          ? Decoration.set([failureMark.range(tr.state.doc.line(line).from)]) : Decoration.none;
      }
    }
    return marks;
  },
  provide: (f) => EditorView.decorations.from(f),
});

// The line a deployment failure names, e.g. "SyntaxError at line 3: …".
export function failureLine(cause) {
  const m = /\bline\D{0,3}(\d+)/i.exec(cause || '');
  return m ? Number(m[1]) : null;
}

const theme = EditorView.theme({
  '&': { height: '460px', backgroundColor: '#fff', fontSize: '13px' },
  '.cm-scroller': { overflow: 'auto' },
  '.cm-failure-line': { backgroundColor: '#fee4e2' },
});

export function CodeEditor({ value, runtime, failure, onChange }) {
  const host = useRef(null);
  const view = useRef(null);
  useEffect(() => {
    const lang = runtime === 'python'
      ? python()
      : [javascript(), javascriptLanguage.data.of({ autocomplete: toolbeltCompletions })];
    // In a shadow root CodeMirror's styles go to adoptedStyleSheets; in the document they
    // would be a <style> element, which the console's CSP (style-src 'self') blocks.
    const shadow = host.current.shadowRoot || host.current.attachShadow({ mode: 'open' });
    view.current = new EditorView({
      doc: value,
      parent: shadow,
      root: shadow,
      extensions: [basicSetup, lang, failureField, theme, EditorView.updateListener.of((u) => {
        if (u.docChanged) onChange(u.state.doc.toString());
      }), EditorView.contentAttributes.of({ 'aria-label': 'Function code' })],
    });
    return () => view.current.destroy();
  }, [runtime]);
  useEffect(() => {
    view.current.dispatch({ effects: setFailureLine.of(failureLine(failure)) });
  }, [failure, runtime]);
  return html`<div class="code-editor" ref=${host}></div>`;
}
