//! Chat templates: the Jinja program a chat model ships (GGUF `tokenizer.chat_template`,
//! `tokenizer_config.json`'s `chat_template`) that lays a conversation out in the format the
//! model was trained on.
//!
//! Templates are written for Hugging Face `transformers`, which renders them with Jinja2 in
//! a particular setup; [`ChatTemplate`] reproduces it with `minijinja`:
//!
//! * `trim_blocks` and `lstrip_blocks` on, no autoescaping, the trailing newline dropped;
//! * `break` / `continue` in loops (Jinja2's `loopcontrols` extension);
//! * Python's string and dict methods on values (`.strip()`, `.startswith()`, `.split()`,
//!   `.items()`, `.get()`, ...), from `minijinja-contrib`'s `pycompat`;
//! * the variables `messages` (each with `role` and `content`), `add_generation_prompt`,
//!   `bos_token` and `eos_token`;
//! * the functions `raise_exception(msg)`, which makes rendering fail with `msg`, and
//!   `strftime_now(format)` (UTC; absent on wasm32, where templates fall back to a fixed
//!   date as they do when it is undefined);
//! * `tojson` as `transformers` defines it: Python's `json.dumps` with non-ASCII kept, and
//!   its `indent` and `sort_keys` options.
//!
//! A model without a template gets [`CHATML_TEMPLATE`], or [`GEMMA_TEMPLATE`] when its
//! vocabulary has Gemma's turn tokens.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, ErrorKind, Value};

use crate::error::{Error, Result};

use super::tokenizer::Tokenizer;

/// The template for models that ship none: ChatML, as used by Qwen, SmolLM and many others
/// (and llama.cpp's own fallback):
///
/// ```text
/// <|im_start|>user
/// Hello<|im_end|>
/// <|im_start|>assistant
/// ```
pub const CHATML_TEMPLATE: &str = r"{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%}";

/// The template for Gemma models that ship none (as the GGUF on PyPI): Gemma's turns, the
/// assistant's called `model`, system text joined to the next user turn, turns trimmed, as
/// Gemma 3's own template lays them out (tested against its transformers renders); unlike
/// it, turns that do not alternate are written rather than refused:
///
/// ```text
/// <bos><start_of_turn>user
/// Hello<end_of_turn>
/// <start_of_turn>model
/// ```
pub const GEMMA_TEMPLATE: &str = r"{{- bos_token -}}
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' -%}
{%- set ns.system = ns.system + message['content'] + '

' -%}
{%- else -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{- '<start_of_turn>' + role + '
' + ns.system + message['content'] | trim + '<end_of_turn>
' -}}
{%- set ns.system = '' -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<start_of_turn>model
' -}}
{%- endif -%}";

/// The name the template is stored under; it shows in error messages.
const NAME: &str = "chat_template";

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool`, or whatever else the template knows.
    pub role: String,
    pub content: String,
    /// An assistant turn's function calls.
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` turn: the call it answers.
    pub tool_call_id: Option<String>,
}

/// One function call of an assistant turn, as OpenAI's API carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as the JSON they spell (templates write them with `tojson`), or as
    /// their text where it is not JSON.
    pub fn arguments_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(self.arguments.clone()))
    }
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template, with the BOS/EOS texts it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// The message `raise_exception` was called with, carried as the error's source so that
/// rendering can report it as the template's own words.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

impl ChatTemplate {
    /// Compiles `source`; `Error::Invalid` when it is not valid Jinja.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|e| Error::Invalid(format!("chat template syntax: {e}")))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        #[cfg(not(target_arch = "wasm32"))]
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, join_continued_strings(&source))
            .map_err(|e| Error::Invalid(format!("chat template does not compile: {e}")))?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            fallback: false,
        })
    }

    /// The ChatML fallback ([`CHATML_TEMPLATE`]).
    pub fn chatml(bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        Self::fallback(CHATML_TEMPLATE, bos_token, eos_token)
    }

    /// A built-in template standing in for one the model lacks.
    fn fallback(source: &str, bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        let mut t = Self::new(source, bos_token, eos_token)
            .expect("the built-in templates compile (tested)");
        t.fallback = true;
        t
    }

    /// The template `tokenizer` carries, or when it has none Gemma's turns for a vocabulary
    /// with Gemma's turn tokens and ChatML for any other, with its BOS/EOS texts.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let bos = tokenizer.bos_token().unwrap_or_default();
        let eos = tokenizer.eos_token().unwrap_or_default();
        let gemma = ["<start_of_turn>", "<end_of_turn>"]
            .iter()
            .all(|t| tokenizer.token_to_id(t).is_some());
        match tokenizer.chat_template() {
            Some(source) => Self::new(source, bos, eos),
            None if gemma => Ok(Self::fallback(GEMMA_TEMPLATE, bos, eos)),
            None => Ok(Self::chatml(bos, eos)),
        }
    }

    /// The template with `strftime_now` reading a fixed clock, `secs` after the Unix epoch
    /// (for goldens rendered at a known instant).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, secs: i64) -> Self {
        self.env
            .add_function("strftime_now", move |format: String| {
                strftime(&format, secs)
            });
        self
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is a built-in fallback (ChatML, Gemma's) rather than the model's own
    /// template.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Renders `messages` into a prompt; with `add_generation_prompt`, ends it with the
    /// header of an assistant turn so the model answers. A template that writes
    /// `bos_token` itself wants the prompt encoded with `add_special = false`.
    ///
    /// `Error::Invalid` when the template fails, with the message of its
    /// `raise_exception(...)` when it raised one (e.g. "Conversation roles must alternate").
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with `tools` (OpenAI's list, `[{"type": "function",
    /// "function": {...}}]`) in the template's `tools` variable, as transformers'
    /// `apply_chat_template(tools=...)` passes them. Assistant turns carry `tool_calls`
    /// (arguments as the JSON object they spell, as templates expect), tool turns
    /// `tool_call_id`.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_spending(messages, tools, add_generation_prompt)
            .map(|(text, _)| text)
    }

    /// [`ChatTemplate::render_with_tools`], with the fuel the render spent.
    pub(crate) fn render_spending(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<(String, u64)> {
        let input = messages
            .iter()
            .map(|m| {
                m.content.len()
                    + m.tool_calls
                        .iter()
                        .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
            + tools.map_or(0, |t| t.to_string().len());
        let limits = RenderLimits::for_input(input, messages.len());
        // The template is a program from the model file: it runs on a budget.
        let mut env = self.env.clone();
        env.set_fuel(Some(limits.fuel));
        let template = env
            .get_template(NAME)
            .map_err(|e| Error::Invalid(format!("chat template: {e}")))?;
        let messages: Vec<Value> = messages.iter().map(message_value).collect();
        let mut pairs = vec![
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
        ];
        if let Some(tools) = tools {
            pairs.push(("tools", from_json(tools)));
        }
        let ctx = Value::from_pairs(pairs);
        let mut out = CappedText {
            text: Vec::new(),
            cap: limits.output,
        };
        let rendered = template
            .render_captured_to(ctx, &mut out)
            .map(|captured| captured.state().fuel_levels().map_or(0, |(spent, _)| spent));
        if out.text.len() > out.cap {
            return Err(Error::Invalid(format!(
                "the model's chat template wrote more than {} bytes for a conversation of {input} bytes; the template is at fault",
                limits.output
            )));
        }
        let spent = match rendered {
            Ok(spent) => spent,
            Err(e) => {
                let raised = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<Raised>());
                return Err(match (raised, e.kind()) {
                (Some(Raised(msg)), _) => {
                    Error::Invalid(format!("chat template raised an exception: {msg}"))
                }
                (None, ErrorKind::OutOfFuel) => Error::Invalid(format!(
                    "the model's chat template ran past its budget ({} steps for a conversation of {input} bytes: it loops too long or builds too much text); the template is at fault",
                    limits.fuel
                )),
                (None, _) => Error::Invalid(format!("chat template failed: {e}")),
            });
            }
        };
        let text = String::from_utf8(out.text)
            .map_err(|_| Error::Invalid("chat template wrote invalid UTF-8".into()))?;
        Ok((text, spent))
    }
}

/// What rendering a conversation may spend. Fuel is minijinja's budget: about one unit per
/// instruction and per 64 bytes a template creates, so it bounds time and memory alike.
/// Both limits grow with the conversation; real templates stay far inside them (the tests'
/// templates spend a few percent, see `real_templates_render_as_transformers_does`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RenderLimits {
    pub fuel: u64,
    /// Bytes of prompt text.
    pub output: usize,
}

impl RenderLimits {
    /// The limits for a conversation of `messages` messages and `input` bytes (contents,
    /// calls and tools).
    pub fn for_input(input: usize, messages: usize) -> Self {
        Self {
            // A floor of about 16 MB of work; real templates spend about 60 a message.
            fuel: 250_000 + input as u64 + 500 * messages as u64,
            output: (4 << 20) + 4 * input,
        }
    }
}

/// A writer that keeps what a render writes up to `cap` bytes and fails past it, so a
/// template's output stops growing there.
struct CappedText {
    text: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.cap {
            self.text
                .extend_from_slice(&buf[..(self.cap + 1).saturating_sub(self.text.len())]);
            return Err(std::io::Error::other("the chat template's output cap"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A message as templates see it: `role` and `content`, plus `tool_calls` and
/// `tool_call_id` where it has them.
fn message_value(m: &Message) -> Value {
    let mut pairs = vec![
        ("role", Value::from(m.role.as_str())),
        ("content", Value::from(m.content.as_str())),
    ];
    if !m.tool_calls.is_empty() {
        let calls: Vec<serde_json::Value> = m
            .tool_calls
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json()},
                })
            })
            .collect();
        pairs.push(("tool_calls", from_json(&serde_json::Value::Array(calls))));
    }
    if let Some(id) = &m.tool_call_id {
        pairs.push(("tool_call_id", Value::from(id.as_str())));
    }
    Value::from_pairs(pairs)
}

/// A JSON value as a template value, objects keeping their key order.
fn from_json(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(from_json).collect::<Vec<_>>()),
        J::Object(map) => Value::from_pairs(
            map.iter()
                .map(|(k, v)| (Value::from(k.as_str()), from_json(v)))
                .collect::<Vec<_>>(),
        ),
    }
}

/// `source` with each backslash-newline inside a string literal of a tag removed: Jinja2
/// reads string literals with Python's escapes, where that pair continues the line (Mistral
/// Small 3.1's template splits its default system message so), while minijinja keeps both
/// characters. Text outside tags, and comments, are left as they are.
fn join_continued_strings(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    // The closing delimiter of the tag we are in, and the quote of the string we are in.
    let mut tag: Option<char> = None;
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (tag, quote) {
            (None, _) => {
                if c == '{' {
                    if let Some(&next @ ('{' | '%' | '#')) = chars.peek() {
                        tag = Some(if next == '{' { '}' } else { next });
                        out.push(c);
                        out.push(next);
                        chars.next();
                        continue;
                    }
                }
            }
            (Some(close), None) => {
                if close != '#' && (c == '"' || c == '\'') {
                    quote = Some(c);
                } else if c == close && chars.peek() == Some(&'}') {
                    tag = None;
                    out.push(c);
                    out.push('}');
                    chars.next();
                    continue;
                }
            }
            (Some(_), Some(q)) => {
                if c == '\\' {
                    match chars.next() {
                        Some('\n') => {}
                        Some(escaped) => {
                            out.push(c);
                            out.push(escaped);
                        }
                        None => out.push(c),
                    }
                    continue;
                }
                if c == q {
                    quote = None;
                }
            }
        }
        out.push(c);
    }
    out
}

/// `raise_exception(msg)`: HF templates call it to reject conversations they cannot format.
fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(Raised(msg)))
}

/// `tojson` as `transformers` defines it: `json.dumps(x, ensure_ascii=False, indent=indent,
/// sort_keys=sort_keys)`, so Python's separators (`", "`, `": "`) rather than compact JSON.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _: Option<Value> = kwargs.get("ensure_ascii")?;
    let _: Option<Value> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, &value, indent, sort_keys.unwrap_or(false), 0)?;
    Ok(Value::from_safe_string(out))
}

/// Writes `value` as Python's `json.dumps` would.
fn write_json(
    out: &mut String,
    value: &Value,
    indent: Option<usize>,
    sort_keys: bool,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    if depth > 256 {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let _ = write!(out, "{value}");
        }
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                let k = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                out.push_str(&serde_json::to_string(&k).unwrap_or_default());
                out.push_str(": ");
                write_json(out, &value.get_item(key)?, indent, sort_keys, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, indent, sort_keys, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a value of kind {}", value.kind()),
            ))
        }
    }
    Ok(())
}

/// `strftime_now(format)`: the current time (UTC) formatted as Python's `strftime`; Llama 3
/// templates put today's date in the system prompt with it.
#[cfg(not(target_arch = "wasm32"))]
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime(&format, secs)
}

/// `format` applied to `secs` seconds after the Unix epoch, in UTC. Supports `%Y %y %m %d
/// %e %j %H %I %M %S %p %b %B %a %A %%`, and glibc's `-` flag (no padding) on the numeric
/// ones; anything else is copied as written.
#[cfg(any(not(target_arch = "wasm32"), test))]
pub(crate) fn strftime(format: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (hour, minute, second) = (sod / 3600, sod / 60 % 60, sod % 60);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let month_name = MONTHS[(month - 1) as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = chars.next();
        let unpadded = spec == Some('-');
        if unpadded {
            spec = chars.next();
        }
        let num = |out: &mut String, v: i64, width: usize| {
            let _ = if unpadded {
                write!(out, "{v}")
            } else {
                write!(out, "{v:0width$}")
            };
        };
        match spec {
            Some('Y') => num(&mut out, year, 4),
            Some('y') => num(&mut out, year.rem_euclid(100), 2),
            Some('m') => num(&mut out, month, 2),
            Some('d') => num(&mut out, day, 2),
            Some('e') => {
                let _ = write!(out, "{day:>2}");
            }
            Some('j') => num(&mut out, yday, 3),
            Some('H') => num(&mut out, hour, 2),
            Some('I') => num(&mut out, hour12, 2),
            Some('M') => num(&mut out, minute, 2),
            Some('S') => num(&mut out, second, 2),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
            }
        }
    }
    out
}
