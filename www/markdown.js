// A small Markdown renderer for streamed model answers.
//
// renderMarkdown(text) returns a string of HTML that is safe to assign to innerHTML: every
// piece of the input is HTML-escaped, and only the tags written below are ever produced.
// Links get an href only when it starts with http:// or https://; any other link is shown as
// its plain text. The text may stop anywhere (it is re-rendered as tokens arrive): an
// unterminated code fence runs to the end, and an unclosed `**` or `` ` `` stays literal.
//
// Supported: paragraphs (single newlines become <br>), ATX headings, **bold**, *italic*,
// ***both***, _italic_, `code`, fenced code blocks with a language, bulleted and numbered
// lists (nested by indentation), block quotes, horizontal rules, [links](https://...) and
// backslash escapes.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const FENCE = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const LIST_ITEM = /^(\s*)([-*+]|(\d{1,9})[.)])(?:[ \t]+(.*))?$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const BLANK = /^\s*$/;

export function renderMarkdown(text) {
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  const out = [];
  let paragraph = []; // lines of the open paragraph
  const lists = []; // open lists, outermost first: { tag, indent }
  let item = null; // lines of the open list item's text
  let afterBlank = false; // a blank line came since the last list line

  const endParagraph = () => {
    if (paragraph.length) out.push(`<p>${inline(paragraph.join("\n"))}</p>`);
    paragraph = [];
  };
  const endItemText = () => {
    if (item) out.push(inline(item.join("\n")));
    item = null;
  };
  const closeList = () => {
    endItemText();
    out.push(`</li></${lists.pop().tag}>`);
  };
  const closeLists = () => {
    while (lists.length) closeList();
  };
  const openList = (tag, indent, number) => {
    const start = tag === "ol" && number !== 1 ? ` start="${number}"` : "";
    out.push(`<${tag}${start}><li>`);
    lists.push({ tag, indent });
  };
  const endBlocks = () => {
    endParagraph();
    closeLists();
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      endBlocks();
      const [, indent, fence, lang] = m;
      const code = [];
      for (i++; i < lines.length; i++) {
        const close = /^\s*(`{3,}|~{3,})\s*$/.exec(lines[i]);
        if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
        code.push(lines[i].startsWith(indent) ? lines[i].slice(indent.length) : lines[i].trimStart());
      }
      const label = lang ? ` data-lang="${escapeHtml(lang)}"` : "";
      out.push(`<pre${label}><code>${escapeHtml(code.join("\n"))}</code></pre>`);
    } else if (BLANK.test(line)) {
      endParagraph();
      afterBlank = true;
    } else if ((m = HEADING.exec(line))) {
      endBlocks();
      const level = m[1].length;
      out.push(`<h${level}>${inline(m[2] ?? "")}</h${level}>`);
    } else if (RULE.test(line)) {
      endBlocks();
      out.push("<hr>");
    } else if ((m = LIST_ITEM.exec(line))) {
      endParagraph();
      const indent = m[1].replace(/\t/g, "    ").length;
      const tag = m[3] === undefined ? "ul" : "ol";
      const top = lists[lists.length - 1];
      if (!top) {
        openList(tag, indent, Number(m[3]));
      } else if (indent >= top.indent + 2) {
        endItemText();
        openList(tag, indent, Number(m[3])); // nested inside the open item
      } else {
        while (lists.length > 1 && indent < lists[lists.length - 1].indent) closeList();
        if (lists[lists.length - 1].tag === tag) {
          endItemText();
          out.push("</li><li>");
        } else {
          closeList();
          openList(tag, indent, Number(m[3]));
        }
      }
      item = [m[4] ?? ""];
      afterBlank = false;
    } else if ((m = QUOTE.exec(line))) {
      endBlocks();
      const quoted = [m[1]];
      while (i + 1 < lines.length && QUOTE.test(lines[i + 1])) quoted.push(QUOTE.exec(lines[++i])[1]);
      out.push(`<blockquote>${renderMarkdown(quoted.join("\n"))}</blockquote>`);
    } else if (lists.length && (!afterBlank || /^\s{2,}/.test(line))) {
      // A continuation of the open list item.
      if (!item) item = [];
      item.push(line.trim());
      afterBlank = false;
    } else {
      closeLists();
      paragraph.push(line.trim());
    }
  }
  endBlocks();
  return out.join("");
}

// --- inline spans -------------------------------------------------------------------------

const PUNCTUATION = /[!-/:-@[-`{-~]/;
const LINK = /^\[([^\[\]\n]*)\]\(\s*<?([^\s()<>]*)>?(?:\s+"[^"\n]*")?\s*\)/;
const SAFE_URL = /^https?:\/\/[^\s]+$/i;
const WORD = /[\p{L}\p{N}]/u;

function inline(text) {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && PUNCTUATION.test(text[i + 1] ?? "")) {
      out += escapeHtml(text[i + 1]);
      i += 2;
    } else if (c === "`") {
      const ticks = /^`+/.exec(text.slice(i))[0];
      const end = findBacktickRun(text, ticks.length, i + ticks.length);
      if (end < 0) {
        out += ticks;
        i += ticks.length;
        continue;
      }
      let code = text.slice(i + ticks.length, end).replace(/\n/g, " ");
      if (/^ .*[^ ].* $/.test(code)) code = code.slice(1, -1);
      out += `<code>${escapeHtml(code)}</code>`;
      i = end + ticks.length;
    } else if (c === "*" || c === "_") {
      const span = emphasis(text, i);
      if (span) {
        out += span.html;
        i = span.end;
      } else {
        const run = text.slice(i).match(c === "*" ? /^\*+/ : /^_+/)[0];
        out += run;
        i += run.length;
      }
    } else if (c === "[" && LINK.test(text.slice(i))) {
      const [whole, label, url] = LINK.exec(text.slice(i));
      if (SAFE_URL.test(url)) {
        const body = label.trim() ? inline(label) : escapeHtml(url);
        out += `<a href="${escapeHtml(url)}" target="_blank" rel="noopener noreferrer">${body}</a>`;
      } else {
        out += inline(label); // not an http(s) link: only its text
      }
      i += whole.length;
    } else if (c === "\n") {
      out += "<br>";
      i++;
    } else {
      out += escapeHtml(c);
      i++;
    }
  }
  return out;
}

// The index of the next run of exactly `length` backticks at or after `from`, or -1.
function findBacktickRun(text, length, from) {
  for (let j = text.indexOf("`", from); j >= 0; j = text.indexOf("`", j)) {
    let k = j;
    while (text[k] === "`") k++;
    if (k - j === length) return j;
    j = k;
  }
  return -1;
}

// Emphasis opening at `start` (a `*` or `_`): { html, end } or null when it does not close.
function emphasis(text, start) {
  const c = text[start];
  if (c === "_" && start > 0 && WORD.test(text[start - 1])) return null; // snake_case
  for (const width of [3, 2, 1]) {
    const delim = c.repeat(width);
    if (!text.startsWith(delim, start)) continue;
    const from = start + width;
    if (from >= text.length || /\s/.test(text[from])) return null;
    for (let j = text.indexOf(c, from + 1); j >= 0; j = text.indexOf(c, j)) {
      let k = j;
      while (text[k] === c) k++; // the run text[j..k)
      const closes = text[j - 1] !== c && k - j === width && !/\s/.test(text[j - 1]);
      if (!closes || (c === "_" && WORD.test(text[k] ?? ""))) {
        j = k;
        continue;
      }
      const inner = inline(text.slice(from, j));
      const html = width === 3 ? `<strong><em>${inner}</em></strong>` : width === 2 ? `<strong>${inner}</strong>` : `<em>${inner}</em>`;
      return { html, end: j + width };
    }
  }
  return null;
}
