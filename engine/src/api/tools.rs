//! Function calling, OpenAI's `tools` and `tool_choice`: what a request offers, how the
//! model is told (its own template, or a description in the system turn for a template
//! without tools), the grammar that holds a required call to a tool's parameters, and the
//! calls read back out of the answer.
//!
//! Calls are written as Hermes-style blocks, the format Qwen2.5's and Qwen3's templates
//! teach: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`, one per call.

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::grammar::Grammar;
use crate::text::{ChatTemplate, Message, Tokenizer, ToolCall};

/// What opens and closes a call in the answer.
pub const CALL_OPEN: &str = "<tool_call>";
pub const CALL_CLOSE: &str = "</tool_call>";

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
        }))
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
        (self.choice == ToolChoice::Auto)
            .then(|| (CALL_OPEN.to_string(), self.calls_grammar(tokenizer, true)))
    }

    /// Calls in Lark: `opened` leaves out the first call's opening. Where the vocabulary
    /// has `<tool_call>` as a special token (Qwen), the grammar asks for that token.
    fn calls_grammar(&self, tokenizer: &Tokenizer, opened: bool) -> Grammar {
        let variants: Vec<Value> = self
            .callable()
            .map(|f| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        let schema = json!({ "anyOf": variants });
        let marker = |text: &str| match tokenizer.token_to_id(text) {
            Some(id) if tokenizer.special_ids().binary_search(&id).is_ok() => format!("<[{id}]>"),
            _ => serde_json::to_string(text).unwrap_or_default(),
        };
        let repeat = if self.parallel {
            r#" ("\n" call)*"#
        } else {
            ""
        };
        let first = if opened { "body" } else { "call" };
        Grammar::Lark(format!(
            "start: {first}{repeat}\ncall: {} body\nbody: \"\\n\" %json {schema} \"\\n\" {}\n",
            marker(CALL_OPEN),
            marker(CALL_CLOSE),
        ))
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
    if template.renders_tools() {
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
    let Some(first) = answer.find(CALL_OPEN) else {
        return (answer.to_string(), Vec::new());
    };
    let mut calls = Vec::new();
    let mut rest = &answer[first..];
    while let Some(start) = rest.find(CALL_OPEN) {
        let body_start = start + CALL_OPEN.len();
        let Some(len) = rest[body_start..].find(CALL_CLOSE) else {
            break;
        };
        let body = rest[body_start..body_start + len].trim();
        let parsed = serde_json::from_str::<Value>(body).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            tools.functions.iter().find(|f| f.name == name)?;
            let arguments = v.get("arguments").cloned().unwrap_or(json!({}));
            let arguments = match arguments {
                Value::String(s) => s,
                other => other.to_string(),
            };
            Some((name, arguments))
        });
        let Some((name, arguments)) = parsed else {
            return (answer.to_string(), Vec::new());
        };
        calls.push(ToolCall {
            id: format!("call_{number}_{}", calls.len()),
            name,
            arguments,
        });
        rest = &rest[body_start + len + CALL_CLOSE.len()..];
    }
    if calls.is_empty() {
        return (answer.to_string(), Vec::new());
    }
    (answer[..first].trim_end().to_string(), calls)
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
        assert_eq!(calls[1].id, "call_7_1");
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        for broken in [
            "<tool_call>\n{\"name\": \"get_weather\"",
            "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>",
            "plain text",
        ] {
            assert_eq!(split_calls(broken, &t, 1), (broken.to_string(), vec![]));
        }
    }
}
