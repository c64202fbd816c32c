//! OpenAI request bodies, read and checked: every field glim honours is validated with a
//! message naming it; fields glim does not know are refused (the browser package) or
//! ignored as OpenAI's server does (`glim serve`), as the caller chooses.

use serde_json::{Map, Value};

use super::tools::Tools;
use crate::error::{Error, Result};
use crate::grammar::Grammar;
use crate::text::{Message, ToolCall};

/// What to do with fields glim does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownFields {
    Reject,
    Ignore,
}

/// Sampling and stopping fields shared by chat and text completions. `None`: not given
/// (the model's or glim's default applies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub max_tokens: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// `response_format`'s JSON object or schema the answer must be.
    pub grammar: Option<Grammar>,
}

/// A chat or text completion request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub input: Input,
    /// The model asked for, if the request names one.
    pub model: Option<String>,
    pub sampling: Sampling,
    pub stream: bool,
    /// Streaming only: end with a chunk carrying `usage`.
    pub include_usage: bool,
    /// Chat only: the functions offered (`tools`, `tool_choice`, `parallel_tool_calls`).
    pub tools: Option<Tools>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// `/chat/completions`: rendered through the model's chat template.
    Messages(Vec<Message>),
    /// `/completions`: the prompt text as is.
    Prompt(String),
}

const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "max_tokens",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "ignore_eos",
    "logprobs",
    "user",
    "response_format",
];
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
];
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo"];

fn bad(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

impl Request {
    /// A `/chat/completions` body.
    pub fn chat(body: &Value, unknown: UnknownFields) -> Result<Self> {
        let obj = object(body, unknown, CHAT_FIELDS)?;
        let messages = match obj.get("messages") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, m)| message(i, m, unknown))
                .collect::<Result<Vec<_>>>()?,
            Some(Value::Array(_)) => return Err(bad("`messages` is empty")),
            Some(_) => return Err(bad("`messages` must be an array of messages")),
            None => return Err(bad("`messages` is required")),
        };
        if !matches!(
            messages.last().map(|m| m.role.as_str()),
            Some("user" | "tool")
        ) {
            return Err(bad(
                "the last message must be from the user or a tool (glim answers it)",
            ));
        }
        let tools = Tools::from_request(obj)?;
        if messages
            .iter()
            .any(|m| m.role == "tool" || !m.tool_calls.is_empty())
            && tools.is_none()
        {
            return Err(bad(
                "`messages` carry tool calls or results, but the request offers no `tools`",
            ));
        }
        let mut request = Self::common(obj, Input::Messages(messages))?;
        request.tools = tools;
        if let Some(n) = optional_count(obj, "max_completion_tokens")? {
            request.sampling.max_tokens = Some(n);
        }
        Ok(request)
    }

    /// A `/completions` body.
    pub fn completion(body: &Value, unknown: UnknownFields) -> Result<Self> {
        let obj = object(body, unknown, COMPLETION_FIELDS)?;
        let prompt = match obj.get("prompt") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(bad("`prompt` is empty")),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(Value::Array(_)) => {
                return Err(bad(
                    "`prompt` must be one string (glim answers one prompt per request)",
                ))
            }
            Some(_) => return Err(bad("`prompt` must be a string")),
            None => return Err(bad("`prompt` is required")),
        };
        if obj.get("echo").is_some_and(|v| v != &Value::Bool(false)) {
            return Err(bad("`echo` is not supported"));
        }
        Self::common(obj, Input::Prompt(prompt))
    }

    fn common(obj: &Map<String, Value>, input: Input) -> Result<Self> {
        let number = |name: &str| sampling_number(obj, name);
        let max_tokens = optional_count(obj, "max_tokens")?;
        if max_tokens == Some(0) {
            return Err(bad("`max_tokens` must be at least 1"));
        }
        let seed = match obj.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .or_else(|| v.as_i64().map(|x| x as u64))
                    .ok_or_else(|| bad("`seed` must be an integer"))?,
            ),
        };
        let stop = match obj.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("`stop` must be a string or a list of strings"))
                })
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad("`stop` must be a string or a list of strings")),
        };
        if stop.iter().any(String::is_empty) {
            return Err(bad("`stop` strings must not be empty"));
        }
        let stream = optional_bool(obj, "stream")?.unwrap_or(false);
        let include_usage = match obj.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) if stream => {
                if let Some(k) = o.keys().find(|k| *k != "include_usage") {
                    return Err(bad(format!("`stream_options.{k}` is not supported")));
                }
                optional_bool(o, "include_usage")?.unwrap_or(false)
            }
            Some(Value::Object(_)) => {
                return Err(bad("`stream_options` is only allowed with `stream: true`"))
            }
            Some(_) => return Err(bad("`stream_options` must be an object")),
        };
        match obj.get("n") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(1) => {}
            Some(v) => {
                return Err(bad(format!(
                    "`n` = {v} is not supported: glim returns one choice per request"
                )))
            }
        }
        if obj
            .get("logprobs")
            .is_some_and(|v| v.as_bool() == Some(true))
        {
            return Err(bad("`logprobs` is not supported"));
        }
        let model = match obj.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(bad("`model` must be a string")),
        };
        Ok(Self {
            input,
            model,
            sampling: Sampling {
                temperature: number("temperature")?,
                top_p: number("top_p")?,
                top_k: optional_count(obj, "top_k")?,
                min_p: number("min_p")?,
                repetition_penalty: number("repetition_penalty")?,
                frequency_penalty: number("frequency_penalty")?,
                presence_penalty: number("presence_penalty")?,
                max_tokens,
                seed,
                stop,
                ignore_eos: optional_bool(obj, "ignore_eos")?.unwrap_or(false),
                grammar: response_format(obj.get("response_format"))?,
            },
            stream,
            include_usage,
            tools: None,
        })
    }
}

/// OpenAI's `response_format`: `{"type": "text"}` (free text, as without it),
/// `{"type": "json_object"}` (any JSON object) or `{"type": "json_schema", "json_schema":
/// {"name", "schema", "strict", "description"}}` (JSON valid against `schema`).
fn response_format(value: Option<&Value>) -> Result<Option<Grammar>> {
    let format = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("`response_format` must be an object")),
    };
    let only = |allowed: &[&str]| match format.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("`response_format.{k}` is not supported"))),
        None => Ok(()),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {
            only(&["type"])?;
            Ok(None)
        }
        Some("json_object") => {
            only(&["type"])?;
            Ok(Some(Grammar::json_object()))
        }
        Some("json_schema") => {
            only(&["type", "json_schema"])?;
            let spec = match format.get("json_schema") {
                Some(Value::Object(spec)) => spec,
                _ => return Err(bad("`response_format.json_schema` must be an object")),
            };
            if let Some(k) = spec
                .keys()
                .find(|k| !["name", "schema", "strict", "description"].contains(&k.as_str()))
            {
                return Err(bad(format!(
                    "`response_format.json_schema.{k}` is not supported"
                )));
            }
            match spec.get("name") {
                Some(Value::String(name)) if !name.is_empty() => {}
                _ => {
                    return Err(bad(
                        "`response_format.json_schema.name` must be a non-empty string",
                    ))
                }
            }
            if spec
                .get("strict")
                .is_some_and(|v| !v.is_boolean() && !v.is_null())
            {
                return Err(bad(
                    "`response_format.json_schema.strict` must be true or false",
                ));
            }
            match spec.get("schema") {
                Some(schema @ Value::Object(_)) => Ok(Some(Grammar::JsonSchema(schema.clone()))),
                // OpenAI's default: any JSON object.
                None | Some(Value::Null) => Ok(Some(Grammar::json_object())),
                Some(_) => Err(bad(
                    "`response_format.json_schema.schema` must be a JSON Schema object",
                )),
            }
        }
        Some(other) => Err(bad(format!(
            "`response_format.type` {other:?} is not supported (text, json_object or json_schema)"
        ))),
        None => Err(bad("`response_format.type` is required")),
    }
}

/// The body as an object, with unknown fields refused when asked.
fn object<'a>(
    body: &'a Value,
    unknown: UnknownFields,
    own: &[&str],
) -> Result<&'a Map<String, Value>> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("the request body must be a JSON object"))?;
    if unknown == UnknownFields::Reject {
        if let Some(k) = obj
            .keys()
            .find(|k| !SAMPLING_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            return Err(bad(format!("unknown or unsupported field `{k}`")));
        }
    }
    Ok(obj)
}

fn message(i: usize, m: &Value, unknown: UnknownFields) -> Result<Message> {
    let obj = m
        .as_object()
        .ok_or_else(|| bad(format!("messages[{i}] must be an object")))?;
    if unknown == UnknownFields::Reject {
        if let Some(k) = obj.keys().find(|k| {
            !["role", "content", "name", "tool_calls", "tool_call_id"].contains(&k.as_str())
        }) {
            return Err(bad(format!("messages[{i}].{k} is not supported")));
        }
    }
    let role = match obj.get("role").and_then(Value::as_str) {
        Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
        Some(r) => {
            return Err(bad(format!(
                "messages[{i}].role {r:?} is not supported (system, user, assistant or tool)"
            )))
        }
        None => return Err(bad(format!("messages[{i}].role is required"))),
    };
    let tool_calls = match (role, obj.get("tool_calls")) {
        (_, None | Some(Value::Null)) => Vec::new(),
        ("assistant", Some(Value::Array(calls))) => calls
            .iter()
            .enumerate()
            .map(|(j, c)| tool_call(i, j, c))
            .collect::<Result<_>>()?,
        ("assistant", Some(_)) => {
            return Err(bad(format!("messages[{i}].tool_calls must be an array")))
        }
        (_, Some(_)) => {
            return Err(bad(format!(
                "messages[{i}].tool_calls: only assistant messages carry calls"
            )))
        }
    };
    let tool_call_id = match (role, obj.get("tool_call_id")) {
        ("tool", Some(Value::String(id))) => Some(id.clone()),
        ("tool", _) => {
            return Err(bad(format!(
                "messages[{i}].tool_call_id is required for a tool message, as a string"
            )))
        }
        _ => None,
    };
    let content = match obj.get("content") {
        // An assistant turn that only calls has no content.
        None | Some(Value::Null) if !tool_calls.is_empty() => String::new(),
        Some(Value::String(s)) => s.clone(),
        // The list form: only text parts.
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(bad(format!(
                            "messages[{i}].content: only text parts are supported"
                        )))
                    }
                }
            }
            text
        }
        Some(_) => return Err(bad(format!("messages[{i}].content must be a string"))),
        None => return Err(bad(format!("messages[{i}].content is required"))),
    };
    Ok(Message {
        tool_calls,
        tool_call_id,
        ..Message::new(role, content)
    })
}

/// `messages[i].tool_calls[j]`: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`, arguments as JSON text (or an object, written back as text).
fn tool_call(i: usize, j: usize, call: &Value) -> Result<ToolCall> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("{at}.function must be an object")))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{at}.function.name is required")))?;
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "{}".into(),
        Some(other @ Value::Object(_)) => other.to_string(),
        Some(_) => return Err(bad(format!("{at}.function.arguments must be JSON text"))),
    };
    let id = match call.get("id") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => format!("call_{i}_{j}"),
        Some(_) => return Err(bad(format!("{at}.id must be a string"))),
    };
    Ok(ToolCall {
        id,
        name: name.to_string(),
        arguments,
    })
}

/// A sampling field of `obj` (`temperature`, `top_p`, `min_p`, `repetition_penalty`,
/// `frequency_penalty`, `presence_penalty`), checked against the range OpenAI's API takes;
/// a model folder's defaults are held to the same ranges.
pub(crate) fn sampling_number(obj: &Map<String, Value>, name: &str) -> Result<Option<f32>> {
    let Some(x) = optional_number(obj, name)? else {
        return Ok(None);
    };
    let (lo, hi, open_low) = match name {
        "temperature" => (0.0, 2.0, false),
        "top_p" => (0.0, 1.0, true),
        "min_p" => (0.0, 1.0, false),
        "repetition_penalty" => (0.0, f32::INFINITY, true),
        "frequency_penalty" | "presence_penalty" => (-2.0, 2.0, false),
        other => unreachable!("`{other}` is not a sampling number"),
    };
    if open_low && x <= lo {
        return Err(bad(format!("`{name}` must be more than {lo}, got {x}")));
    }
    if !(lo..=hi).contains(&x) {
        return Err(bad(format!(
            "`{name}` must be between {lo} and {hi}, got {x}"
        )));
    }
    Ok(Some(x))
}

fn optional_number(obj: &Map<String, Value>, name: &str) -> Result<Option<f32>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(|x| Some(x as f32))
            .ok_or_else(|| bad(format!("`{name}` must be a number"))),
    }
}

fn optional_count(obj: &Map<String, Value>, name: &str) -> Result<Option<usize>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|x| Some(x.min(usize::MAX as u64) as usize))
            .ok_or_else(|| bad(format!("`{name}` must be a whole number, 0 or more"))),
    }
}

fn optional_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("`{name}` must be true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(v: Value) -> Result<Request> {
        Request::chat(&v, UnknownFields::Reject)
    }

    fn err(v: Value) -> String {
        chat(v).unwrap_err().to_string()
    }

    #[test]
    fn reads_every_field() {
        let r = chat(json!({
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "temperature": 0.5, "top_p": 0.9, "top_k": 20, "min_p": 0.1,
            "repetition_penalty": 1.1, "frequency_penalty": 0.5, "presence_penalty": -0.5,
            "max_tokens": 12, "seed": 7, "stop": ["\n\n", "END"], "stream": true,
            "stream_options": {"include_usage": true}, "n": 1, "model": "m"
        }))
        .unwrap();
        assert_eq!(
            r.input,
            Input::Messages(vec![Message::system("be brief"), Message::user("hi")])
        );
        let s = &r.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.top_k),
            (Some(0.5), Some(0.9), Some(20))
        );
        assert_eq!((s.max_tokens, s.seed), (Some(12), Some(7)));
        assert_eq!(s.stop, ["\n\n", "END"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(r.model.as_deref(), Some("m"));
        let m = chat(json!({"messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 3, "stop": "Q:"}))
        .unwrap();
        assert_eq!(m.sampling.max_tokens, Some(3));
        assert_eq!(m.sampling.stop, ["Q:"]);
    }

    #[test]
    fn bad_fields_are_named() {
        let user = json!([{"role": "user", "content": "x"}]);
        let with = |k: &str, v: Value| {
            let mut body = json!({ "messages": user.clone() });
            body[k] = v;
            err(body)
        };
        assert!(with("temperature", json!("hot")).contains("`temperature`"));
        assert!(with("temperature", json!(3)).contains("between 0 and 2"));
        assert!(with("top_p", json!(0)).contains("`top_p`"));
        assert!(with("max_tokens", json!(-1)).contains("`max_tokens`"));
        assert!(with("max_tokens", json!(0)).contains("at least 1"));
        assert!(with("n", json!(2)).contains("`n`"));
        assert!(with("stop", json!([1])).contains("`stop`"));
        assert!(with("tools", json!("all")).contains("`tools`"));
        assert!(with("logit_bias", json!({})).contains("`logit_bias`"));
        assert!(with("stream_options", json!({"include_usage": true})).contains("stream"));
        assert!(err(json!({})).contains("`messages` is required"));
        assert!(err(json!({"messages": []})).contains("empty"));
        assert!(err(json!([1])).contains("JSON object"));
        assert!(err(json!({"messages": [{"role": "tool", "content": "x"}]})).contains("tool"));
        assert!(err(json!({"messages": [{"role": "user"}]})).contains("content"));
        assert!(err(json!({"messages": [{"role": "user", "content": "x"},
                                     {"role": "assistant", "content": "y"}]}))
        .contains("last message"));
        // The server's mode: unknown fields pass, known ones are still checked.
        let lax = |v: Value| Request::chat(&v, UnknownFields::Ignore);
        assert!(lax(json!({"messages": user.clone(), "logit_bias": {}})).is_ok());
        assert!(lax(json!({"messages": user.clone(), "top_k": 1.5})).is_err());
    }

    #[test]
    fn response_format_becomes_a_grammar() {
        let user = json!([{"role": "user", "content": "x"}]);
        let with =
            |format: Value| chat(json!({"messages": user.clone(), "response_format": format}));
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let got = |format: Value| with(format).unwrap().sampling.grammar;
        assert_eq!(got(json!({"type": "text"})), None);
        assert_eq!(
            got(json!({"type": "json_object"})),
            Some(Grammar::json_object())
        );
        assert_eq!(
            got(
                json!({"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": true}})
            ),
            Some(Grammar::JsonSchema(schema.clone()))
        );
        let e = |format: Value| with(format).unwrap_err().to_string();
        assert!(e(json!("json")).contains("must be an object"));
        assert!(e(json!({"type": "xml"})).contains("\"xml\""));
        assert!(e(json!({})).contains("type` is required"));
        assert!(e(json!({"type": "json_schema"})).contains("json_schema` must be an object"));
        assert!(
            e(json!({"type": "json_schema", "json_schema": {"schema": schema}})).contains("name")
        );
        assert!(
            e(json!({"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}))
                .contains("schema")
        );
        assert!(e(json!({"type": "json_object", "schema": {}})).contains("response_format.schema"));
    }

    #[test]
    fn completions_take_one_prompt() {
        let r = Request::completion(
            &json!({"prompt": "Once", "max_tokens": 4}),
            UnknownFields::Reject,
        )
        .unwrap();
        assert_eq!(r.input, Input::Prompt("Once".into()));
        let e = |v: Value| {
            Request::completion(&v, UnknownFields::Reject)
                .unwrap_err()
                .to_string()
        };
        assert!(e(json!({"prompt": ["a", "b"]})).contains("one string"));
        assert!(e(json!({"prompt": 3})).contains("`prompt`"));
        assert!(e(json!({"messages": []})).contains("`messages`"));
    }
}
