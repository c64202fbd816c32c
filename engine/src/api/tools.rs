//! Function calling, OpenAI's `tools` and `tool_choice`: what a request offers, how the
//! model is told (its own template, or a description in the system turn for a template
//! without tools), the grammar that holds a required call to a tool's parameters, and the
//! calls read back out of the answer.
//!
//! Calls are written in the format the model's template teaches ([`CallFormat`]): Hermes-style
//! blocks (Qwen2.5, Qwen3), Llama 3.x's bare JSON, or Mistral's `[TOOL_CALLS]` array. A
//! template without tools gets the Hermes format, described in the system turn.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::grammar::Grammar;
use crate::text::{ChatTemplate, Message, Tokenizer, ToolCall};

/// What opens and closes a Hermes-style call in the answer.
pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

/// Llama 3.x's marker before a call it makes (optional in its custom-tool format).
const PYTHON_TAG: &str = "<|python_tag|>";
/// What opens Mistral's list of calls.
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
/// How Llama 3.x's call begins (its JSON's first key).
const LLAMA_CALL: &str = "{\"name\"";

/// How a model writes its function calls, as its chat template teaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallFormat {
    /// A block per call: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
    /// (Qwen2.5's and Qwen3's templates, and glim's description for templates without tools).
    Hermes,
    /// Llama 3.x: one call as bare JSON, `{"name": ..., "parameters": {...}}`, sometimes after
    /// `<|python_tag|>`; its templates render one call per turn.
    Llama3,
    /// Mistral: `[TOOL_CALLS]` and a JSON array of `{"name": ..., "arguments": {...}}`.
    Mistral,
}

impl CallFormat {
    /// The format `template` renders calls in; `None` for a template that renders no tools
    /// (or not in a format glim reads), whose model is then told of them in the system turn.
    pub fn of(template: &ChatTemplate) -> Option<Self> {
        let source = template.source();
        if template.is_fallback() || !source.contains("tool_call") {
            None
        } else if source.contains(MISTRAL_CALLS) {
            Some(Self::Mistral)
        } else if source.contains(CALL_OPEN) {
            Some(Self::Hermes)
        } else if source.contains("ipython") && source.contains("\"parameters\"") {
            Some(Self::Llama3)
        } else {
            None
        }
    }

    /// The text that opens the model's calls; under `auto`, the tools' grammar holds what
    /// follows it.
    fn trigger(self) -> &'static str {
        match self {
            Self::Hermes => CALL_OPEN,
            Self::Llama3 => LLAMA_CALL,
            Self::Mistral => MISTRAL_CALLS,
        }
    }

    /// Every text that may open calls (a stream holds them back until the answer ends).
    pub(super) fn openings(self) -> &'static [&'static str] {
        match self {
            Self::Hermes => &[CALL_OPEN],
            Self::Llama3 => &[PYTHON_TAG, LLAMA_CALL],
            Self::Mistral => &[MISTRAL_CALLS],
        }
    }

    /// The key that holds a call's arguments.
    fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            Self::Hermes | Self::Mistral => "arguments",
        }
    }

    /// Whether one answer may hold several calls.
    fn parallel(self) -> bool {
        self != Self::Llama3
    }
}

/// A function the model may call.
#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema for its arguments (an object).
    pub parameters: Value,
}

impl Function {
    /// `{"name", "parameters", "description"}`, as OpenAI's `function` object carries it.
    fn signature(&self) -> Value {
        let mut function = json!({"name": self.name, "parameters": self.parameters});
        if let Some(d) = &self.description {
            function["description"] = json!(d);
        }
        function
    }
}

/// OpenAI's `tool_choice`.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    /// The model answers or calls, as it likes.
    Auto,
    /// No call: the tools are not shown.
    None,
    /// At least one call, and nothing else.
    Required,
    /// A call of this function, and nothing else.
    Named(String),
}

/// The tools a request offers and how they may be used.
#[derive(Clone, Debug, PartialEq)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: ToolChoice,
    /// Several calls in one answer (`parallel_tool_calls`, default true).
    pub parallel: bool,
    /// How the model writes calls (see [`Tools::in_format`]); Hermes' until a model's
    /// template says otherwise.
    pub format: CallFormat,
}

fn bad(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

impl Tools {
    /// `tools`, `tool_choice` and `parallel_tool_calls` of a request body, checked; `None`
    /// without tools.
    pub fn from_request(obj: &Map<String, Value>) -> Result<Option<Tools>> {
        let list = match obj.get("tools") {
            None | Some(Value::Null) => {
                return match obj.get("tool_choice") {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s == "none" || s == "auto" => Ok(None),
                    Some(_) => Err(bad("`tool_choice` needs `tools`")),
                }
            }
            Some(Value::Array(list)) => list,
            Some(_) => return Err(bad("`tools` must be an array of tools")),
        };
        let functions = list
            .iter()
            .enumerate()
            .map(|(i, t)| function(i, t))
            .collect::<Result<Vec<_>>>()?;
        for (i, f) in functions.iter().enumerate() {
            if functions[..i].iter().any(|g| g.name == f.name) {
                return Err(bad(format!("`tools` names `{}` twice", f.name)));
            }
        }
        let choice = match obj.get("tool_choice") {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(bad(format!(
                        "`tool_choice` {other:?} is not supported (auto, none, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}})"
                    )))
                }
            },
            Some(Value::Object(o)) => {
                let name = o
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`tool_choice.function.name` is required"))?;
                if !functions.iter().any(|f| f.name == name) {
                    return Err(bad(format!(
                        "`tool_choice` names `{name}`, which is not among `tools`"
                    )));
                }
                ToolChoice::Named(name.to_string())
            }
            Some(_) => return Err(bad("`tool_choice` must be a string or an object")),
        };
        if functions.is_empty() {
            // As no tools, as clients that always send the field mean it.
            return match choice {
                ToolChoice::Auto | ToolChoice::None => Ok(None),
                _ => Err(bad("`tool_choice` asks for a call, but `tools` is empty")),
            };
        }
        let parallel = match obj.get("parallel_tool_calls") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("`parallel_tool_calls` must be true or false")),
        };
        Ok(Some(Tools {
            functions,
            choice,
            parallel,
            format: CallFormat::Hermes,
        }))
    }

    /// These tools for a model whose template is `template`: its calls are expected, held
    /// and read in the template's format.
    pub fn in_format(&self, template: &ChatTemplate) -> Tools {
        Tools {
            format: CallFormat::of(template).unwrap_or(CallFormat::Hermes),
            ..self.clone()
        }
    }

    /// Whether one answer may hold several calls: asked for, and the format has them.
    fn parallel_calls(&self) -> bool {
        self.parallel && self.format.parallel()
    }

    /// Whether the model is told of the tools and its calls are read back.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    /// The functions the model may call under `tool_choice`.
    fn callable(&self) -> impl Iterator<Item = &Function> {
        self.functions.iter().filter(|f| match &self.choice {
            ToolChoice::Named(name) => &f.name == name,
            _ => true,
        })
    }

    /// OpenAI's list, as templates take it.
    pub fn as_json(&self) -> Value {
        Value::Array(
            self.functions
                .iter()
                .map(|f| json!({"type": "function", "function": f.signature()}))
                .collect(),
        )
    }

    /// The grammar a `required` or named choice holds the whole answer to: one call (or
    /// several, with `parallel`) whose JSON names a callable function and whose arguments
    /// its parameters' schema allows. `None` for `auto` (see [`Tools::grammar_after_opening`])
    /// and `none`.
    pub fn grammar(&self, tokenizer: &Tokenizer) -> Option<Grammar> {
        if !matches!(self.choice, ToolChoice::Required | ToolChoice::Named(_)) {
            return None;
        }
        Some(self.calls_grammar(tokenizer, false))
    }

    /// Under `auto`, the model writes freely until it opens a call: the trigger text that
    /// opens one, and the grammar that holds what follows it (the rest of that call, then
    /// more calls with `parallel`).
    pub fn grammar_after_opening(&self, tokenizer: &Tokenizer) -> Option<(String, Grammar)> {
        (self.choice == ToolChoice::Auto).then(|| {
            (
                self.format.trigger().to_string(),
                self.calls_grammar(tokenizer, true),
            )
        })
    }

    /// Calls in Lark, in the tools' format: `opened` leaves out what the trigger already
    /// wrote. Where the vocabulary has a marker as a special token (Qwen's `<tool_call>`,
    /// Mistral's `[TOOL_CALLS]`), the grammar asks for that token.
    fn calls_grammar(&self, tokenizer: &Tokenizer, opened: bool) -> Grammar {
        let key = self.format.arguments_key();
        let variants: Vec<Value> = self
            .callable()
            .map(|f| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f.name}, key: f.parameters},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let schema = json!({ "anyOf": variants });
        let marker = |text: &str| match tokenizer.token_to_id(text) {
            Some(id) if tokenizer.special_ids().binary_search(&id).is_ok() => format!("<[{id}]>"),
            _ => lark_string(text),
        };
        let parallel = self.parallel_calls();
        Grammar::Lark(match self.format {
            CallFormat::Hermes => {
                let repeat = if parallel { r#" ("\n" call)*"# } else { "" };
                let first = if opened { "body" } else { "call" };
                format!(
                    "start: {first}{repeat}\ncall: {} body\nbody: \"\\n\" %json {schema} \"\\n\" {}\n",
                    marker(CALL_OPEN),
                    marker(CALL_CLOSE),
                )
            }
            CallFormat::Mistral => {
                let mut list = json!({"type": "array", "items": schema, "minItems": 1});
                if !parallel {
                    list["maxItems"] = json!(1);
                }
                let open = if opened {
                    String::new()
                } else {
                    marker(MISTRAL_CALLS)
                };
                format!("start: {open} \" \"? %json {list}\n")
            }
            CallFormat::Llama3 => {
                // As the template writes a call: `{"name": "f", "parameters": ` + arguments + `}`.
                let calls: Vec<String> = self
                    .callable()
                    .map(|f| {
                        let head = format!("{LLAMA_CALL}: \"{}\", \"{key}\": ", f.name);
                        let head = if opened {
                            &head[LLAMA_CALL.len()..]
                        } else {
                            &head
                        };
                        format!("{} %json {} \"}}\"", lark_string(head), f.parameters)
                    })
                    .collect();
                format!("start: {}\n", calls.join(" | "))
            }
        })
    }

    /// The system turn's text that teaches a model whose template knows no tools how to
    /// call them (the format Hermes-style templates teach).
    pub fn instructions(&self) -> String {
        let mut text = String::from(
            "You can call functions to help answer. Their signatures, as JSON, one per line:\n<tools>\n",
        );
        for f in self.functions.iter() {
            text.push_str(&f.signature().to_string());
            text.push('\n');
        }
        text.push_str(&format!(
            "</tools>\nTo call a function, answer with {CALL_OPEN}\n{{\"name\": <function-name>, \"arguments\": <arguments-object>}}\n{CALL_CLOSE}\nA function's result comes back in <tool_response></tool_response>."
        ));
        text
    }
}

/// `text` as a Lark string literal.
fn lark_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn function(i: usize, tool: &Value) -> Result<Function> {
    let at = |what: &str| format!("tools[{i}]{what}");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad(format!(
            "{}: only `\"type\": \"function\"` tools are supported",
            at(".type")
        )));
    }
    let f = tool
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("{} must be an object", at(".function"))))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .ok_or_else(|| {
            bad(format!(
                "{} must be 1 to 64 letters, digits, _ or -",
                at(".function.name")
            ))
        })?;
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(bad(format!(
                "{} must be a string",
                at(".function.description")
            )))
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(bad(format!(
                "{} must be a JSON Schema object",
                at(".function.parameters")
            )))
        }
    };
    Ok(Function {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// The prompt text for `messages`, offering `tools` where they are active: through the
/// model's own template where it renders tools, else through its template with the tools
/// described in the system turn and past calls and results written in the same
/// Hermes-style blocks (so a conversation keeps its calls under `tool_choice: none` too).
pub fn render(
    template: &ChatTemplate,
    messages: &[Message],
    tools: Option<&Tools>,
) -> Result<String> {
    let offered = tools.filter(|t| t.active());
    if CallFormat::of(template).is_some() {
        let list = offered.map(Tools::as_json);
        return template.render_with_tools(messages, list.as_ref(), true);
    }
    let mut plain: Vec<Message> = Vec::with_capacity(messages.len() + 1);
    let system = messages.first().filter(|m| m.role == "system");
    match (system, offered.map(Tools::instructions)) {
        (Some(m), Some(instructions)) => {
            plain.push(Message::system(format!("{}\n\n{instructions}", m.content)))
        }
        (None, Some(instructions)) => plain.push(Message::system(instructions)),
        (Some(m), None) => plain.push(m.clone()),
        (None, None) => {}
    }
    for m in &messages[usize::from(system.is_some())..] {
        plain.push(match m.role.as_str() {
            "assistant" if !m.tool_calls.is_empty() => {
                let mut text = m.content.clone();
                for call in &m.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&call_block(call));
                }
                Message::assistant(text)
            }
            "tool" => Message::user(format!("<tool_response>\n{}\n</tool_response>", m.content)),
            _ => Message::new(m.role.as_str(), m.content.as_str()),
        });
    }
    template.render(&plain, true)
}

/// A call as the model writes it.
fn call_block(call: &ToolCall) -> String {
    format!(
        "{CALL_OPEN}\n{}\n{CALL_CLOSE}",
        json!({"name": call.name, "arguments": call.arguments_json()})
    )
}

/// The answer split into its text before the first call and the calls, each checked
/// against the offered functions; `number` makes the call ids unique per request. Text
/// that opens a call but does not hold one (cut off, or not JSON naming a known function)
/// stays text.
pub fn split_calls(answer: &str, tools: &Tools, number: u64) -> (String, Vec<ToolCall>) {
    let found = match tools.format {
        CallFormat::Hermes => hermes_calls(answer),
        CallFormat::Llama3 => llama3_calls(answer),
        CallFormat::Mistral => mistral_calls(answer),
    };
    let key = tools.format.arguments_key();
    let read = |(start, values): (usize, Vec<Value>)| {
        let calls = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let name = v.get("name")?.as_str()?;
                tools.functions.iter().find(|f| f.name == name)?;
                let arguments = match v.get(key).cloned().unwrap_or(json!({})) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                Some(ToolCall {
                    // Nine digits or more end each id: Mistral's template takes their last nine.
                    id: format!("call_{number:07}{i:02}"),
                    name: name.to_string(),
                    arguments,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let text = answer[..start].trim_end();
        let text = text.strip_suffix(PYTHON_TAG).unwrap_or(text).trim_end();
        (!calls.is_empty()).then(|| (text.to_string(), calls))
    };
    found
        .and_then(read)
        .unwrap_or_else(|| (answer.to_string(), Vec::new()))
}

/// Hermes-style blocks: where the first opens, and each block's JSON.
fn hermes_calls(answer: &str) -> Option<(usize, Vec<Value>)> {
    let first = answer.find(CALL_OPEN)?;
    let mut values = Vec::new();
    let mut rest = &answer[first..];
    while let Some(start) = rest.find(CALL_OPEN) {
        let body_start = start + CALL_OPEN.len();
        // A last call cut off (at the token limit) ends the list; those before it stand.
        let Some(len) = rest[body_start..].find(CALL_CLOSE) else {
            break;
        };
        values.push(serde_json::from_str(rest[body_start..body_start + len].trim()).ok()?);
        rest = &rest[body_start + len + CALL_CLOSE.len()..];
    }
    Some((first, values))
}

/// Llama 3.x's call: the first JSON object whose first key is `name`, ending the answer.
fn llama3_calls(answer: &str) -> Option<(usize, Vec<Value>)> {
    let start = answer
        .match_indices('{')
        .map(|(at, _)| at)
        .find(|&at| answer[at + 1..].trim_start().starts_with("\"name\""))?;
    let (value, end) = first_json(&answer[start..])?;
    answer[start + end..]
        .trim()
        .is_empty()
        .then(|| (start, vec![value]))
}

/// Mistral's calls: the JSON array after `[TOOL_CALLS]`, ending the answer.
fn mistral_calls(answer: &str) -> Option<(usize, Vec<Value>)> {
    let start = answer.find(MISTRAL_CALLS)?;
    let after = &answer[start + MISTRAL_CALLS.len()..];
    let (value, end) = first_json(after)?;
    match value {
        Value::Array(values) if after[end..].trim().is_empty() => Some((start, values)),
        _ => None,
    }
}

/// The JSON value `text` starts with (after whitespace), and where it ends.
fn first_json(text: &str) -> Option<(Value, usize)> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let value = values.next()?.ok()?;
    Some((value, values.byte_offset()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: Value) -> Result<Option<Tools>> {
        let body = json!({
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}}],
            "tool_choice": choice,
        });
        Tools::from_request(body.as_object().unwrap())
    }

    #[test]
    fn tool_fields_are_checked() {
        let t = tools(json!("auto")).unwrap().unwrap();
        assert_eq!(t.choice, ToolChoice::Auto);
        assert!(t.parallel);
        assert_eq!(
            tools(json!({"type": "function", "function": {"name": "get_weather"}}))
                .unwrap()
                .unwrap()
                .choice,
            ToolChoice::Named("get_weather".into())
        );
        let e = |choice: Value| tools(choice).unwrap_err().to_string();
        assert!(e(json!("sometimes")).contains("`tool_choice`"));
        assert!(e(json!({"type": "function", "function": {"name": "nope"}})).contains("`nope`"));
        let e = |body: Value| {
            Tools::from_request(body.as_object().unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(e(json!({"tools": [{"type": "retrieval"}]})).contains("tools[0].type"));
        assert!(
            e(json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}))
                .contains("name")
        );
        assert!(e(json!({"tool_choice": "required"})).contains("needs `tools`"));
    }

    #[test]
    fn calls_are_read_back_and_bad_ones_stay_text() {
        let t = tools(json!("auto")).unwrap().unwrap();
        let answer = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        let (text, calls) = split_calls(answer, &t, 7);
        assert_eq!(text, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].id, "call_000000701");
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        // A call cut off after whole ones: the whole ones are read.
        let cut = format!("{answer}\n<tool_call>\n{{\"name\": \"get_");
        assert_eq!(split_calls(&cut, &t, 7).1.len(), 2);
        for broken in [
            "<tool_call>\n{\"name\": \"get_weather\"",
            "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>",
            "plain text",
        ] {
            assert_eq!(split_calls(broken, &t, 1), (broken.to_string(), vec![]));
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn formats_are_read_from_templates() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/templates");
        for (file, want) in [
            ("Qwen-Qwen2.5-7B-Instruct.jinja", Some(CallFormat::Hermes)),
            ("Qwen-Qwen3-0.6B.jinja", Some(CallFormat::Hermes)),
            (
                "meta-llama-Llama-3.2-1B-Instruct.jinja",
                Some(CallFormat::Llama3),
            ),
            (
                "mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja",
                Some(CallFormat::Mistral),
            ),
            ("microsoft-Phi-3.5-mini-instruct.jinja", None),
            ("google-gemma-3-it.jinja", None),
        ] {
            let source = std::fs::read_to_string(dir.join(file)).unwrap();
            let template = ChatTemplate::new(source, "", "").unwrap();
            assert_eq!(CallFormat::of(&template), want, "{file}");
        }
        assert_eq!(CallFormat::of(&ChatTemplate::chatml("", "")), None);
    }

    #[test]
    fn llama_and_mistral_calls_are_read_back() {
        let auto = tools(json!("auto")).unwrap().unwrap();
        let llama = Tools {
            format: CallFormat::Llama3,
            ..auto.clone()
        };
        for (answer, text) in [
            (
                "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
                "",
            ),
            (
                "Let me look.\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n",
                "Let me look.",
            ),
        ] {
            let (got, calls) = split_calls(answer, &llama, 3);
            assert_eq!(got, text);
            assert_eq!(calls.len(), 1, "{answer}");
            assert_eq!(
                (calls[0].name.as_str(), calls[0].arguments.as_str()),
                ("get_weather", r#"{"city":"Paris"}"#)
            );
        }
        let mistral = Tools {
            format: CallFormat::Mistral,
            ..auto
        };
        let answer = "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}, \"id\": \"abcdefghi\"}]";
        let (text, calls) = split_calls(answer, &mistral, 12);
        assert_eq!(text, "");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].arguments, r#"{"city":"Rome"}"#);
        // Ids end in nine digits or more, which Mistral's template asks of the calls it renders.
        assert_eq!(calls[1].id, "call_000001201");
        for (t, broken) in [
            (
                &llama,
                "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}} and more",
            ),
            (
                &llama,
                "{\"name\": \"get_weather\", \"parameters\": {\"city\"",
            ),
            (&llama, "{\"name\": \"other\", \"parameters\": {}}"),
            (&mistral, "[TOOL_CALLS] [{\"name\": \"get_weather\""),
            (
                &mistral,
                "[TOOL_CALLS] {\"name\": \"get_weather\", \"arguments\": {}}",
            ),
        ] {
            assert_eq!(split_calls(broken, t, 1), (broken.to_string(), vec![]));
        }
    }
}
