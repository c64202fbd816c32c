// node --test www/markdown.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { renderMarkdown, escapeHtml } from "./markdown.js";

const md = renderMarkdown;

// The output must be made of these tags (with these attributes) and escaped text only.
const TAG = /^<\/?(p|br|h[1-6]|strong|em|code|pre|ul|ol|li|a|blockquote|hr)((?: (?:href|target|rel|start|data-lang)="[^"<>]*")*)>$/;

function assertSafe(html) {
  for (const piece of html.split(/(<[^>]*>)/)) {
    if (piece.startsWith("<")) {
      const m = TAG.exec(piece);
      assert.ok(m, `unexpected tag ${piece} in ${html}`);
      const href = /href="([^"]*)"/.exec(m[2]);
      if (href) assert.match(href[1], /^https?:\/\//, `unsafe href in ${html}`);
      if (piece.startsWith("<a ")) assert.match(m[2], /rel="noopener noreferrer"/);
    } else {
      assert.doesNotMatch(piece, /[<>"]|&(?!(amp|lt|gt|quot|#39);)/, `unescaped text ${piece} in ${html}`);
    }
  }
}

test("paragraphs and line breaks", () => {
  assert.equal(md("Hello"), "<p>Hello</p>");
  assert.equal(md("one\ntwo\n\nthree"), "<p>one<br>two</p><p>three</p>");
  assert.equal(md(""), "");
  assert.equal(md("\n\n"), "");
});

test("headings", () => {
  assert.equal(md("# Title"), "<h1>Title</h1>");
  assert.equal(md("### Three ###"), "<h3>Three</h3>");
  assert.equal(md("## C#"), "<h2>C#</h2>");
  assert.equal(md("#hashtag"), "<p>#hashtag</p>");
  assert.equal(md("Intro\n## Part **two**\ntext"), "<p>Intro</p><h2>Part <strong>two</strong></h2><p>text</p>");
});

test("bold, italic and inline code", () => {
  assert.equal(md("a **bold** b"), "<p>a <strong>bold</strong> b</p>");
  assert.equal(md("a __bold__ b"), "<p>a <strong>bold</strong> b</p>");
  assert.equal(md("an *italic* word"), "<p>an <em>italic</em> word</p>");
  assert.equal(md("an _italic_ word"), "<p>an <em>italic</em> word</p>");
  assert.equal(md("***both***"), "<p><strong><em>both</em></strong></p>");
  assert.equal(md("**bold with *italic* inside**"), "<p><strong>bold with <em>italic</em> inside</strong></p>");
  assert.equal(md("*italic with **bold** inside*"), "<p><em>italic with <strong>bold</strong> inside</em></p>");
  assert.equal(md("use `x < y` here"), "<p>use <code>x &lt; y</code> here</p>");
  assert.equal(md("``a ` b``"), "<p><code>a ` b</code></p>");
  assert.equal(md("` `` `"), "<p><code>``</code></p>");
  assert.equal(md("`**not bold**`"), "<p><code>**not bold**</code></p>");
});

test("things that are not emphasis stay literal", () => {
  assert.equal(md("2 * 3 * 4"), "<p>2 * 3 * 4</p>");
  assert.equal(md("snake_case_name"), "<p>snake_case_name</p>");
  assert.equal(md("**unclosed"), "<p>**unclosed</p>");
  assert.equal(md("`unclosed"), "<p>`unclosed</p>");
  assert.equal(md("\\*escaped\\*"), "<p>*escaped*</p>");
});

test("fenced code blocks", () => {
  assert.equal(md("```python\nprint('<hi>')\n```"), `<pre data-lang="python"><code>print(&#39;&lt;hi&gt;&#39;)</code></pre>`);
  assert.equal(md("~~~\n  indented\n\n**no markdown**\n~~~"), "<pre><code>  indented\n\n**no markdown**</code></pre>");
  assert.equal(md("before\n```\ncode\n```\nafter"), "<p>before</p><pre><code>code</code></pre><p>after</p>");
  assert.equal(md("````\n```\ninner\n```\n````"), "<pre><code>```\ninner\n```</code></pre>");
  assert.equal(md("```js\n```"), `<pre data-lang="js"><code></code></pre>`);
});

test("an unterminated fence while streaming runs to the end", () => {
  assert.equal(md("Here:\n```js\nlet a = 1;\n"), `<p>Here:</p><pre data-lang="js"><code>let a = 1;\n</code></pre>`);
  assert.equal(md("```"), "<pre><code></code></pre>");
  const partial = md("```html\n<script>alert(1)</script>");
  assert.equal(partial, `<pre data-lang="html"><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre>`);
  assertSafe(partial);
});

test("bulleted lists", () => {
  assert.equal(md("- a\n- b\n- c"), "<ul><li>a</li><li>b</li><li>c</li></ul>");
  assert.equal(md("* one\n+ two"), "<ul><li>one</li><li>two</li></ul>");
  assert.equal(md("Intro:\n- **x**: y"), "<p>Intro:</p><ul><li><strong>x</strong>: y</li></ul>");
  assert.equal(md("- a\n  more a\n- b\n\nafter"), "<ul><li>a<br>more a</li><li>b</li></ul><p>after</p>");
});

test("numbered and nested lists", () => {
  assert.equal(md("1. a\n2. b"), "<ol><li>a</li><li>b</li></ol>");
  assert.equal(md("3. c\n4. d"), `<ol start="3"><li>c</li><li>d</li></ol>`);
  assert.equal(md("1. a\n\n2. b"), "<ol><li>a</li><li>b</li></ol>");
  assert.equal(md("1. a\n   - x\n   - y\n2. b"), "<ol><li>a<ul><li>x</li><li>y</li></ul></li><li>b</li></ol>");
  assert.equal(md("- a\n1. b"), "<ul><li>a</li></ul><ol><li>b</li></ol>");
  const html = md("1. first\n```sh\nls\n```\n2. second");
  assert.equal(html, `<ol><li>first</li></ol><pre data-lang="sh"><code>ls</code></pre><ol start="2"><li>second</li></ol>`);
});

test("quotes and rules", () => {
  assert.equal(md("> quoted **text**\n> more"), "<blockquote><p>quoted <strong>text</strong><br>more</p></blockquote>");
  assert.equal(md("a\n\n---\n\nb"), "<p>a</p><hr><p>b</p>");
  assert.equal(md("* * *"), "<hr>");
});

test("links: http(s) only, with rel=noopener noreferrer", () => {
  assert.equal(
    md("see [the docs](https://example.com/a?b=1&c=2)"),
    `<p>see <a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">the docs</a></p>`,
  );
  assert.equal(md(`[x](http://e.com "title")`), `<p><a href="http://e.com" target="_blank" rel="noopener noreferrer">x</a></p>`);
  assert.equal(md("[click](javascript:alert)"), "<p>click</p>");
  assert.equal(md("[click](JavaScript:alert(1))"), "<p>[click](JavaScript:alert(1))</p>");
  assert.equal(md("[data](data:text/html,hi)"), "<p>data</p>");
  assert.equal(md("[rel](/local/path)"), "<p>rel</p>");
  assert.equal(md(`[q](https://e.com/"onmouseover="x)`), `<p><a href="https://e.com/&quot;onmouseover=&quot;x" target="_blank" rel="noopener noreferrer">q</a></p>`);
  assert.equal(md("[](https://e.com)"), `<p><a href="https://e.com" target="_blank" rel="noopener noreferrer">https://e.com</a></p>`);
  assert.equal(md("plain https://e.com stays text"), "<p>plain https://e.com stays text</p>");
});

test("HTML in the model's output is escaped, never passed through", () => {
  const attacks = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "Hello <b>bold</b> & <i>more</i>",
    "**<img src=x onerror=alert(1)>**",
    "`<script>`",
    "# <svg onload=alert(1)>",
    "- <iframe src=javascript:alert(1)>",
    "[<img src=x onerror=alert(1)>](https://e.com)",
    "[x](https://e.com/\"><script>alert(1)</script>)",
    "[x](javascript:alert(1))",
    "[x](  javascript:alert(1)  )",
    "> <style>body{display:none}</style>",
    "<a href=\"javascript:alert(1)\">click</a>",
    "```\n</code></pre><script>alert(1)</script>",
    "```\"><script>\nx\n```",
    "&lt;script&gt; already escaped",
    "<!-- comment -->",
  ];
  for (const attack of attacks) {
    const html = md(attack);
    assertSafe(html);
    assert.ok(!html.includes("<script"), html);
  }
  assert.equal(md("<script>alert(1)</script>"), "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>");
  assert.equal(md("<img src=x onerror=alert(1)>"), "<p>&lt;img src=x onerror=alert(1)&gt;</p>");
  assert.equal(md("&lt;b&gt;"), "<p>&amp;lt;b&amp;gt;</p>");
});

test("every prefix of a streamed answer renders safely", () => {
  const answer = [
    "# Plan",
    "Here is **bold**, *italic* and `code`.",
    "1. First <img src=x onerror=alert(1)>",
    "2. Second [link](https://example.com)",
    "   - nested [bad](javascript:alert(1))",
    "```js",
    "document.body.innerHTML = '<script>alert(1)</script>';",
    "```",
    "> done",
  ].join("\n");
  for (let n = 0; n <= answer.length; n++) assertSafe(md(answer.slice(0, n)));
});

test("escapeHtml", () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
});

test("odd input does not throw", () => {
  assert.equal(md(null), "");
  assert.equal(md(undefined), "");
  assert.equal(md("\r\n# Windows\r\ntext\r\n"), "<h1>Windows</h1><p>text</p>");
  assert.doesNotThrow(() => md("*".repeat(2000) + "_".repeat(2000) + "`".repeat(2000) + "[".repeat(2000)));
});
