//! MLC-LLM conversation templates: the `conv_template` object of an MLC model folder's
//! `mlc-chat-config.json` (what WebLLM downloads), and its translation to and from the
//! Hugging Face Jinja chat templates glim renders with [`ChatTemplate`].
//!
//! MLC lays a conversation out with fixed strings rather than a program
//! (`mlc_llm/protocol/conversation_protocol.py`, `Conversation.as_prompt`, as the MLC
//! server drives it from a chat request):
//!
//! * the system prompt is `system_template` with every `{system_message}` replaced by the
//!   request's system message, or by the template's own `system_message` when the request
//!   has none; it is left out only when that comes out as the empty string. A system message
//!   is allowed only as the first message;
//! * every other message is `roles[role] + role_content_sep`, then `role_templates[role]`
//!   with its placeholder (`{user_message}`, `{assistant_message}`) replaced by the content,
//!   then `seps[0]` after a non-assistant message and `seps[1]` after an assistant one (a
//!   single separator serves both). With `add_role_after_system_message` false, the first
//!   message drops its role prefix when a system prompt was written;
//! * the reply header, a last assistant message without content, is
//!   `roles["assistant"] + role_empty_sep`, with no separator;
//! * in the whole prompt the last `{function_string}` becomes `function_string` and any
//!   other is removed.
//!
//! `system_prefix_token_ids`, when set, are token ids MLC puts before the encoded prompt;
//! they are not text, so [`ConvTemplate::to_jinja`] leaves them to the caller.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::template::{ChatTemplate, Message};
use crate::error::{Error, Result};

/// MLC's placeholders (`MessagePlaceholders`).
const SYSTEM_PLACEHOLDER: &str = "{system_message}";
const FUNCTION_PLACEHOLDER: &str = "{function_string}";

/// The placeholder MLC substitutes in `role_templates[role]` (`MessagePlaceholders[role.upper()]`).
fn placeholder(role: &str) -> Option<&'static str> {
    match role.to_uppercase().as_str() {
        "SYSTEM" => Some(SYSTEM_PLACEHOLDER),
        "USER" => Some("{user_message}"),
        "ASSISTANT" => Some("{assistant_message}"),
        "TOOL" => Some("{tool_message}"),
        "FUNCTION" => Some(FUNCTION_PLACEHOLDER),
        _ => None,
    }
}

/// MLC's `Conversation` as a model folder stores it: the fields of `mlc-chat-config.json`'s
/// `conv_template`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvTemplate {
    pub name: Option<String>,
    /// The system prompt, with `{system_message}` where the message goes.
    pub system_template: String,
    /// The system message used when a conversation brings none.
    pub system_message: String,
    /// Token ids put before the encoded prompt (usually BOS); not part of the text.
    pub system_prefix_token_ids: Option<Vec<u32>>,
    /// Whether the first message keeps its role prefix after a system prompt (false for
    /// `[INST]`-style formats, whose system prompt opens the first user turn).
    pub add_role_after_system_message: bool,
    /// Role name (`user`, `assistant`, `tool`) to the text that opens its turns.
    pub roles: BTreeMap<String, String>,
    /// Role name to the template its content is put in; MLC's defaults
    /// (`{user_message}`, ...) for the roles the config leaves out.
    pub role_templates: BTreeMap<String, String>,
    /// Messages the template starts every conversation with: `(role, content)`, content
    /// `None` for a bare turn header.
    pub messages: Vec<(String, Option<String>)>,
    /// One separator after every message, or two: after non-assistant and after assistant
    /// messages.
    pub seps: Vec<String>,
    pub role_content_sep: String,
    pub role_empty_sep: String,
    pub stop_str: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub function_string: String,
    pub use_function_calling: bool,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("MLC conv_template field `{field}`: {what}"))
}

fn unsupported(why: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!(
        "chat template cannot be expressed as an MLC conv_template: {why}"
    ))
}

fn get_str(obj: &Map<String, Value>, field: &str, default: &str) -> Result<String> {
    match obj.get(field) {
        None => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(invalid(field, format!("expected a string, got {other}"))),
    }
}

fn get_bool(obj: &Map<String, Value>, field: &str, default: bool) -> Result<bool> {
    match obj.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(
            field,
            format!("expected true or false, got {other}"),
        )),
    }
}

fn str_list(value: &Value, field: &str) -> Result<Vec<String>> {
    let items = value
        .as_array()
        .ok_or_else(|| invalid(field, format!("expected a list of strings, got {value}")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(invalid(
                &format!("{field}[{i}]"),
                format!("expected a string, got {other}"),
            )),
        })
        .collect()
}

fn id_list(value: &Value, field: &str) -> Result<Vec<u32>> {
    let items = value
        .as_array()
        .ok_or_else(|| invalid(field, format!("expected a list of token ids, got {value}")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        &format!("{field}[{i}]"),
                        format!("expected a token id, got {v}"),
                    )
                })
        })
        .collect()
}

fn str_map(value: &Value, field: &str) -> Result<BTreeMap<String, String>> {
    let obj = value.as_object().ok_or_else(|| {
        invalid(
            field,
            format!("expected an object of role names to strings, got {value}"),
        )
    })?;
    obj.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(invalid(
                &format!("{field}.{k}"),
                format!("expected a string, got {other}"),
            )),
        })
        .collect()
}

fn default_role_templates() -> BTreeMap<String, String> {
    ["user", "assistant", "tool"]
        .into_iter()
        .map(|r| (r.to_owned(), placeholder(r).unwrap_or_default().to_owned()))
        .collect()
}

/// `s` as a Jinja string literal: double-quoted, with quotes, backslashes and control
/// characters escaped, so any text (braces, `{{`, `%}`, quotes, newlines) stays literal.
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Jinja expression for `template` with every `placeholder` replaced by the expression
/// `var`, as Python's `str.replace` does.
fn substitute(template: &str, placeholder: &str, var: &str) -> String {
    let mut pieces = Vec::new();
    for (i, part) in template.split(placeholder).enumerate() {
        if i > 0 {
            pieces.push(var.to_owned());
        }
        if !part.is_empty() {
            pieces.push(lit(part));
        }
    }
    if pieces.is_empty() {
        lit("")
    } else {
        pieces.join(" ~ ")
    }
}

impl ConvTemplate {
    /// Reads a `conv_template` object. Missing optional fields take MLC's defaults; `roles`
    /// and `seps` are required, as in MLC. `Error::Invalid` naming the field for a wrong
    /// type or a `seps` list that does not hold one or two separators.
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("conv_template", format!("expected an object, got {value}")))?;
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(invalid("name", format!("expected a string, got {other}"))),
        };
        let system_prefix_token_ids = match obj.get("system_prefix_token_ids") {
            None | Some(Value::Null) => None,
            Some(v) => Some(id_list(v, "system_prefix_token_ids")?),
        };
        let roles = str_map(
            obj.get("roles")
                .ok_or_else(|| invalid("roles", "missing"))?,
            "roles",
        )?;
        let mut role_templates = default_role_templates();
        if let Some(v) = obj.get("role_templates").filter(|v| !v.is_null()) {
            role_templates.extend(str_map(v, "role_templates")?);
        }
        let messages = match obj.get("messages") {
            None => Vec::new(),
            Some(v) => {
                let items = v.as_array().ok_or_else(|| {
                    invalid(
                        "messages",
                        format!("expected a list of [role, content], got {v}"),
                    )
                })?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        let field = format!("messages[{i}]");
                        match m.as_array().map(Vec::as_slice) {
                            Some([Value::String(role), Value::String(c)]) => {
                                Ok((role.clone(), Some(c.clone())))
                            }
                            Some([Value::String(role), Value::Null]) => Ok((role.clone(), None)),
                            Some([Value::String(_), Value::Array(_)]) => Err(Error::Unsupported(
                                format!("MLC conv_template field `{field}`: content lists"),
                            )),
                            _ => Err(invalid(
                                &field,
                                format!("expected [role, content or null], got {m}"),
                            )),
                        }
                    })
                    .collect::<Result<_>>()?
            }
        };
        let seps = str_list(
            obj.get("seps").ok_or_else(|| invalid("seps", "missing"))?,
            "seps",
        )?;
        if seps.is_empty() || seps.len() > 2 {
            return Err(invalid(
                "seps",
                format!("must hold 1 or 2 separators, got {}", seps.len()),
            ));
        }
        Ok(Self {
            name,
            system_template: get_str(obj, "system_template", SYSTEM_PLACEHOLDER)?,
            system_message: get_str(obj, "system_message", "")?,
            system_prefix_token_ids,
            add_role_after_system_message: get_bool(obj, "add_role_after_system_message", true)?,
            roles,
            role_templates,
            messages,
            seps,
            role_content_sep: get_str(obj, "role_content_sep", "")?,
            role_empty_sep: get_str(obj, "role_empty_sep", "")?,
            stop_str: match obj.get("stop_str") {
                None => Vec::new(),
                Some(v) => str_list(v, "stop_str")?,
            },
            stop_token_ids: match obj.get("stop_token_ids") {
                None => Vec::new(),
                Some(v) => id_list(v, "stop_token_ids")?,
            },
            function_string: get_str(obj, "function_string", "")?,
            use_function_calling: get_bool(obj, "use_function_calling", false)?,
        })
    }

    /// The `conv_template` object as MLC writes it (`model_dump(exclude_none=True)`): every
    /// field, `name` and `system_prefix_token_ids` only when set.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        if let Some(name) = &self.name {
            obj.insert("name".into(), name.clone().into());
        }
        obj.insert(
            "system_template".into(),
            self.system_template.clone().into(),
        );
        obj.insert("system_message".into(), self.system_message.clone().into());
        if let Some(ids) = &self.system_prefix_token_ids {
            obj.insert("system_prefix_token_ids".into(), ids.clone().into());
        }
        obj.insert(
            "add_role_after_system_message".into(),
            self.add_role_after_system_message.into(),
        );
        let map = |m: &BTreeMap<String, String>| {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect(),
            )
        };
        obj.insert("roles".into(), map(&self.roles));
        obj.insert("role_templates".into(), map(&self.role_templates));
        obj.insert(
            "messages".into(),
            Value::Array(
                self.messages
                    .iter()
                    .map(|(r, c)| Value::Array(vec![r.clone().into(), c.clone().into()]))
                    .collect(),
            ),
        );
        obj.insert("seps".into(), self.seps.clone().into());
        obj.insert(
            "role_content_sep".into(),
            self.role_content_sep.clone().into(),
        );
        obj.insert("role_empty_sep".into(), self.role_empty_sep.clone().into());
        obj.insert("stop_str".into(), self.stop_str.clone().into());
        obj.insert("stop_token_ids".into(), self.stop_token_ids.clone().into());
        obj.insert(
            "function_string".into(),
            self.function_string.clone().into(),
        );
        obj.insert(
            "use_function_calling".into(),
            self.use_function_calling.into(),
        );
        Value::Object(obj)
    }

    /// The separator after a message of `role`.
    fn sep(&self, role: &str) -> &str {
        let i = usize::from(role == "assistant").min(self.seps.len().saturating_sub(1));
        self.seps.get(i).map_or("", String::as_str)
    }

    /// A Hugging Face-style Jinja chat template (variables `messages`,
    /// `add_generation_prompt`) that renders exactly what MLC's `as_prompt` renders for the
    /// same chat request: a first `system` message replaces `system_message`, the others
    /// become MLC's messages, and `add_generation_prompt` adds the assistant reply header.
    /// A system message after the first, or a role other than system/user/assistant, makes
    /// rendering fail with a message saying so. `system_prefix_token_ids` are not text and are
    /// not part of the template.
    pub fn to_jinja(&self) -> String {
        let mut j = String::new();
        let raise = |msg: &str| format!("{{{{- raise_exception({}) -}}}}\n", lit(msg));
        let name = self.name.as_deref().unwrap_or("unnamed");
        let append = |expr: &str| format!("{{%- set ns.out = ns.out ~ {expr} -%}}\n");

        // The system message: the conversation's first message, or the template's default.
        j += &format!(
            "{{%- set ns = namespace(system={}, out=\"\", i={}) -%}}\n",
            lit(&self.system_message),
            self.messages.len()
        );
        j += "{%- for m in messages -%}\n{%- if m.role == \"system\" -%}\n";
        j += "{%- if not loop.first -%}\n";
        j += &raise(&format!(
            "MLC conv_template {name}: a system message is only allowed as the first message"
        ));
        j += "{%- endif -%}\n{%- set ns.system = m.content -%}\n";
        j += "{%- elif m.role != \"user\" and m.role != \"assistant\" -%}\n";
        j += &format!(
            "{{{{- raise_exception({} ~ m.role) -}}}}\n",
            lit(&format!(
                "MLC conv_template {name}: messages must be system, user or assistant, not "
            ))
        );
        j += "{%- endif -%}\n{%- endfor -%}\n";
        j += &format!(
            "{{%- set system_prompt = {} -%}}\n{{%- set ns.out = system_prompt -%}}\n",
            substitute(&self.system_template, SYSTEM_PLACEHOLDER, "ns.system")
        );

        // Whether message `i` drops its role prefix: only the first, after a system prompt.
        let prefix_cond = "not (ns.i == 0 and system_prompt != \"\")";
        let prefix = |j: &mut String, role_prefix: &str, index: Option<usize>| {
            if self.add_role_after_system_message {
                *j += &append(&lit(role_prefix));
            } else if index.is_none_or(|i| i == 0) {
                let cond = match index {
                    Some(_) => "system_prompt == \"\"",
                    None => prefix_cond,
                };
                *j += &format!("{{%- if {cond} -%}}\n");
                *j += &append(&lit(role_prefix));
                *j += "{%- endif -%}\n";
            } else {
                *j += &append(&lit(role_prefix));
            }
        };

        // The template's own messages come first, with fixed contents.
        for (i, (role, content)) in self.messages.iter().enumerate() {
            let Some(role_str) = self.roles.get(role) else {
                j += &raise(&format!(
                    "MLC conv_template {name}: role {role} is not one of its roles"
                ));
                continue;
            };
            let Some(content) = content else {
                j += &append(&lit(&format!("{role_str}{}", self.role_empty_sep)));
                continue;
            };
            let (Some(ph), Some(tmpl)) = (placeholder(role), self.role_templates.get(role)) else {
                j += &raise(&format!(
                    "MLC conv_template {name}: role {role} has no message template"
                ));
                continue;
            };
            prefix(
                &mut j,
                &format!("{role_str}{}", self.role_content_sep),
                Some(i),
            );
            j += &append(&lit(&format!(
                "{}{}",
                tmpl.replace(ph, content),
                self.sep(role)
            )));
        }

        // The conversation's messages.
        j += "{%- for m in messages -%}\n";
        for (k, role) in ["user", "assistant"].into_iter().enumerate() {
            j += &format!(
                "{{%- {} m.role == \"{role}\" -%}}\n",
                if k == 0 { "if" } else { "elif" }
            );
            match (
                self.roles.get(role),
                self.role_templates.get(role),
                placeholder(role),
            ) {
                (Some(role_str), Some(tmpl), Some(ph)) => {
                    prefix(
                        &mut j,
                        &format!("{role_str}{}", self.role_content_sep),
                        None,
                    );
                    j += &append(&format!(
                        "{} ~ {}",
                        substitute(tmpl, ph, "m.content"),
                        lit(self.sep(role))
                    ));
                }
                _ => j += &raise(&format!("MLC conv_template {name}: it has no {role} role")),
            }
        }
        j += "{%- endif -%}\n{%- if m.role != \"system\" -%}{%- set ns.i = ns.i + 1 -%}{%- endif -%}\n";
        j += "{%- endfor -%}\n";

        // The reply header.
        j += "{%- if add_generation_prompt -%}\n";
        match self.roles.get("assistant") {
            Some(role_str) => j += &append(&lit(&format!("{role_str}{}", self.role_empty_sep))),
            None => {
                j += &raise(&format!(
                    "MLC conv_template {name}: it has no assistant role"
                ))
            }
        }
        j += "{%- endif -%}\n";

        // The last `{function_string}` becomes the function string, the others go.
        let ph = lit(FUNCTION_PLACEHOLDER);
        j += &format!("{{%- set parts = ns.out | split({ph}) -%}}\n");
        j += "{%- if parts | length > 1 -%}\n";
        j += &format!(
            "{{{{- (parts[:-1] | join({ph}) ~ {} ~ parts[-1]) | replace({ph}, \"\") -}}}}\n",
            lit(&self.function_string)
        );
        j += "{%- else -%}\n{{- ns.out -}}\n{%- endif -%}\n";
        j
    }

    /// A conv_template that lays conversations out as `template` does, found by rendering
    /// probe conversations with marker contents and splitting the output at the markers,
    /// then checked: conversations with a system message, an empty one and none, of one to
    /// three user turns, with and without the reply header, must render identically through
    /// `template` and through [`ConvTemplate::to_jinja`] of the result.
    ///
    /// A template that writes a default system prompt when the conversation has none gets
    /// it as `system_message`. `stop_str` is the special or EOS token text that ends an
    /// assistant turn, if any; `system_prefix_token_ids` stays unset (a BOS the template
    /// writes stays text in `system_template`).
    ///
    /// `Error::Unsupported` ("chat template cannot be expressed as an MLC conv_template:
    /// ...") when no conv_template renders as `template` does, for instance when it writes
    /// no system turn for a conversation without a system message (MLC always writes
    /// `system_template`, unless it comes out empty), or changes format after some turns.
    pub fn derive(template: &ChatTemplate, name: &str, stop_token_ids: Vec<u32>) -> Result<Self> {
        const S: &str = "GlimProbeSystem7q";
        const U1: &str = "GlimProbeUser1x";
        const A1: &str = "GlimProbeAssistant1x";
        const U2: &str = "GlimProbeUser2x";
        let render = |msgs: &[Message], gen: bool| {
            template
                .render(msgs, gen)
                .map_err(|e| unsupported(format!("a probe conversation does not render: {e}")))
        };

        // system + user + assistant + user + reply header:
        // x0 S x1 U1 x2 A1 x3 U2 x4.
        let full = render(
            &[
                Message::system(S),
                Message::user(U1),
                Message::assistant(A1),
                Message::user(U2),
            ],
            true,
        )?;
        let x = split_at_markers(&full, &[S, U1, A1, U2])?;
        // What ends a user turn and what ends an assistant turn.
        let after = |msgs: &[Message], marker: &str| -> Result<String> {
            let out = render(msgs, false)?;
            Ok(split_at_markers(&out, &[marker])?.pop().unwrap_or_default())
        };
        let sep_user = after(&[Message::system(S), Message::user(U1)], U1)?;
        let sep_assistant = after(
            &[
                Message::system(S),
                Message::user(U1),
                Message::assistant(A1),
            ],
            A1,
        )?;
        let strip = |s: &str, prefix: &str, what: &str| -> Result<String> {
            s.strip_prefix(prefix).map(str::to_owned).ok_or_else(|| {
                unsupported(format!(
                    "{what} is {s:?}, which does not start with {prefix:?}, the end of the \
                     conversation's last turn"
                ))
            })
        };
        let assistant_prefix = strip(
            &x[2],
            &sep_user,
            "the text between a user message and an assistant reply",
        )?;
        let reply_header = strip(&x[4], &sep_user, "the text after the last user message")?;
        let user_prefix = strip(
            &x[3],
            &sep_assistant,
            "the text between an assistant reply and a user message",
        )?;

        // The system prompt: everything before the first user message, less its role prefix
        // when it has one.
        let (system_suffix, add_role_after_system_message) = match x[1].strip_suffix(&user_prefix) {
            Some(s) => (s.to_owned(), true),
            None => (x[1].clone(), false),
        };
        let system_template = format!("{}{SYSTEM_PLACEHOLDER}{system_suffix}", x[0]);

        // Roles and the separator after them: the common end of both role prefixes, kept
        // from cutting a `<|...|>`-style token in two, and such that the reply header starts
        // with the assistant role.
        let common = common_suffix_len(&user_prefix, &assistant_prefix);
        let mut cut = whole_token_cut(&user_prefix, &assistant_prefix, common);
        let fits = |cut: usize| {
            reply_header.starts_with(&assistant_prefix[..assistant_prefix.len() - cut])
        };
        if !fits(cut) {
            cut = common;
        }
        if !fits(cut) {
            return Err(unsupported(format!(
                "the reply header {reply_header:?} does not start with the assistant role of \
                 {assistant_prefix:?}"
            )));
        }
        let user_role = user_prefix[..user_prefix.len() - cut].to_owned();
        let assistant_role = assistant_prefix[..assistant_prefix.len() - cut].to_owned();
        let role_content_sep = assistant_prefix[assistant_prefix.len() - cut..].to_owned();
        let role_empty_sep = reply_header[assistant_role.len()..].to_owned();

        // The default system message: what the template writes without one.
        let bare = render(
            &[Message::user(U1), Message::assistant(A1), Message::user(U2)],
            true,
        )?;
        let y = split_at_markers(&bare, &[U1, A1, U2])?;
        let (head, tail) = (x[0].as_str(), system_suffix.as_str());
        let before_user = if add_role_after_system_message {
            y[0].strip_suffix(&user_prefix)
        } else {
            Some(y[0].as_str())
        };
        let system_message = match before_user {
            Some(s)
                if s.len() >= head.len() + tail.len()
                    && s.starts_with(head)
                    && s.ends_with(tail) =>
            {
                s[head.len()..s.len() - tail.len()].to_owned()
            }
            _ if head.is_empty() && tail.is_empty() => String::new(),
            _ => {
                return Err(unsupported(format!(
                    "without a system message it writes {:?} before the first user message, \
                     where an MLC conv_template always writes its system prompt {:?} (MLC \
                     drops it only when it is empty)",
                    y[0], system_template
                )))
            }
        };

        // A special or EOS token text that ends assistant turns is a stop string.
        let turn_end = sep_assistant.trim_start();
        let eos = template.eos_token();
        let stop = if !eos.is_empty() && turn_end.starts_with(eos) {
            Some(eos.to_owned())
        } else if turn_end.starts_with("<|") {
            turn_end
                .find("|>")
                .map(|end| turn_end[..end + 2].to_owned())
        } else {
            None
        };

        let mut roles = BTreeMap::new();
        roles.insert("user".to_owned(), user_role);
        roles.insert("assistant".to_owned(), assistant_role);
        let seps = if sep_user == sep_assistant {
            vec![sep_user]
        } else {
            vec![sep_user, sep_assistant]
        };
        let conv = Self {
            name: Some(name.to_owned()),
            system_template,
            system_message,
            system_prefix_token_ids: None,
            add_role_after_system_message,
            roles,
            role_templates: default_role_templates(),
            messages: Vec::new(),
            seps,
            role_content_sep,
            role_empty_sep,
            stop_str: stop.into_iter().collect(),
            stop_token_ids,
            function_string: String::new(),
            use_function_calling: false,
        };
        conv.verify(template)?;
        Ok(conv)
    }

    /// Renders conversations through `template` and through this conv_template's Jinja;
    /// `Error::Unsupported` at the first that differs.
    fn verify(&self, template: &ChatTemplate) -> Result<()> {
        let ours = ChatTemplate::new(self.to_jinja(), template.bos_token(), template.eos_token())?;
        let user = [
            "Hello there",
            "What is {x} in \"JSON\"?\nTwo lines, 'quoted' <b>.",
            "Thanks, bye",
        ];
        let assistant = ["Hi! How can I help?", "It's {\"x\": 1}.\n\nDone."];
        let turns = |n: usize, last_reply: bool| {
            let mut msgs = Vec::new();
            for i in 0..n {
                msgs.push(Message::user(user[i]));
                if i + 1 < n || last_reply {
                    msgs.push(Message::assistant(assistant[i % assistant.len()]));
                }
            }
            msgs
        };
        for system in [Some("You are terse."), Some(""), None] {
            for (n, last_reply, gen) in [
                (1, false, true),
                (2, false, true),
                (3, false, true),
                (1, false, false),
                (1, true, false),
                (2, true, false),
            ] {
                if system == Some("") && n > 1 {
                    continue;
                }
                let mut msgs: Vec<Message> = system.map(Message::system).into_iter().collect();
                msgs.extend(turns(n, last_reply));
                let want = template.render(&msgs, gen).map_err(|e| {
                    unsupported(format!("the conversation {msgs:?} does not render: {e}"))
                })?;
                let got = ours.render(&msgs, gen)?;
                if want != got {
                    return Err(unsupported(format!(
                        "for {msgs:?} (add_generation_prompt {gen}) the template writes \
                         {want:?} but the conv_template {got:?}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `s` cut at `markers`, which must each occur exactly once, in order: the texts before,
/// between and after them.
fn split_at_markers(s: &str, markers: &[&str]) -> Result<Vec<String>> {
    let mut parts = Vec::with_capacity(markers.len() + 1);
    let mut rest = s;
    for m in markers {
        if s.matches(m).count() != 1 {
            return Err(unsupported(format!(
                "it does not write message contents verbatim and once each (probe {m:?} in \
                 {s:?})"
            )));
        }
        let Some((before, after)) = rest.split_once(m) else {
            return Err(unsupported(format!(
                "it does not write messages in conversation order ({s:?})"
            )));
        };
        parts.push(before.to_owned());
        rest = after;
    }
    parts.push(rest.to_owned());
    Ok(parts)
}

/// The length in bytes of the longest common suffix of `a` and `b`, on a character boundary.
fn common_suffix_len(a: &str, b: &str) -> usize {
    a.chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum()
}

/// The largest cut of at most `cut` bytes off the end of both `a` and `b` (their common
/// suffix) that leaves no `<|...|>`, `<...>` or `[...]` open in what remains of either.
fn whole_token_cut(a: &str, b: &str, mut cut: usize) -> usize {
    let open = |s: &str| {
        [("<|", "|>"), ("<", ">"), ("[", "]")]
            .into_iter()
            .find_map(|(o, c)| {
                let at = s.rfind(o)?;
                (!s[at..].contains(c)).then_some(c)
            })
    };
    loop {
        let closer = open(&a[..a.len() - cut]).or_else(|| open(&b[..b.len() - cut]));
        let Some(closer) = closer else { return cut };
        let suffix = &a[a.len() - cut..];
        match suffix.find(closer) {
            Some(at) => cut -= at + closer.len(),
            None => return cut,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::text::CHATML_TEMPLATE;

    fn conv(v: Value) -> ConvTemplate {
        ConvTemplate::from_json(&v).unwrap()
    }

    fn jinja(c: &ConvTemplate) -> ChatTemplate {
        ChatTemplate::new(c.to_jinja(), "<s>", "</s>").unwrap()
    }

    /// MLC's ChatML conv_template (`conv_templates.py`'s "chatml").
    fn mlc_chatml() -> ConvTemplate {
        conv(json!({
            "name": "chatml",
            "system_template": "<|im_start|>system\n{system_message}<|im_end|>\n",
            "system_message": "A conversation between a user and an LLM-based AI assistant.",
            "roles": {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
            "seps": ["<|im_end|>\n"],
            "role_content_sep": "\n",
            "role_empty_sep": "\n",
            "stop_str": ["<|im_end|>"],
            "stop_token_ids": [2]
        }))
    }

    #[test]
    fn chatml_conv_template_renders_like_mlc() {
        let t = jinja(&mlc_chatml());
        let msgs = [
            Message::system("Be brief."),
            Message::user("Hi!"),
            Message::assistant("Hello."),
            Message::user("2+2?"),
        ];
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        // No system message: the template's own.
        assert_eq!(
            t.render(&msgs[1..3], false).unwrap(),
            "<|im_start|>system\nA conversation between a user and an LLM-based AI \
             assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n\
             Hello.<|im_end|>\n"
        );
        // An empty one still gets the system turn, as in MLC.
        assert_eq!(
            t.render(&[Message::system(""), Message::user("Hi!")], true)
                .unwrap(),
            "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama2_conv_template_alternates_two_seps() {
        let mut c = conv(json!({
            "name": "llama-2",
            "system_template": "[INST] <<SYS>>\n{system_message}\n<</SYS>>\n\n",
            "system_message": "You are helpful.",
            "roles": {"user": "<s>[INST]", "assistant": "[/INST]", "tool": "[INST]"},
            "seps": [" ", " </s>"],
            "role_content_sep": " ",
            "role_empty_sep": " ",
            "stop_str": ["[INST]"],
            "system_prefix_token_ids": [1],
            "add_role_after_system_message": false
        }));
        let msgs = [
            Message::system("Be kind."),
            Message::user("Hi"),
            Message::assistant("Hello"),
            Message::user("Bye"),
            Message::assistant("Ciao"),
        ];
        // The system prompt opens the first user turn, which drops its role; " " follows
        // user messages and " </s>" assistant ones.
        assert_eq!(
            jinja(&c).render(&msgs[..4], true).unwrap(),
            "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST] "
        );
        assert_eq!(
            jinja(&c).render(&msgs, false).unwrap(),
            "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST] \
             Ciao </s>"
        );
        // With a system prompt that comes out empty, the first turn keeps its role.
        c.system_template = "{system_message}".into();
        c.system_message = String::new();
        assert_eq!(
            jinja(&c).render(&msgs[1..4], true).unwrap(),
            "<s>[INST] Hi [/INST] Hello </s><s>[INST] Bye [/INST] "
        );
    }

    #[test]
    fn conv_template_strings_stay_literal() {
        // Jinja syntax, quotes and backslashes in every string; role templates; the function
        // string replacing the last placeholder of the whole prompt, the others removed.
        let c = conv(json!({
            "system_template": "<<{system_message}|%}>>\n",
            "system_message": "d'f\"\\",
            "roles": {"user": "{{U}}", "assistant": "{%A%}"},
            "role_templates": {"user": "[{user_message}]{function_string}"},
            "messages": [],
            "seps": ["\t"],
            "role_content_sep": ":",
            "role_empty_sep": "=",
            "function_string": "FN",
            "use_function_calling": true
        }));
        assert_eq!(c.role_templates["assistant"], "{assistant_message}");
        let out = jinja(&c)
            .render(
                &[
                    Message::user("x{function_string}y"),
                    Message::assistant("ok"),
                    Message::user("z"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            out,
            "<<d'f\"\\|%}>>\n{{U}}:[xy]\t{%A%}:ok\t{{U}}:[z]FN\t{%A%}="
        );

        // Preset messages come first and count as turns.
        let mut c = mlc_chatml();
        c.messages = vec![
            ("user".into(), Some("Ping".into())),
            ("assistant".into(), Some("Pong".into())),
        ];
        assert_eq!(
            jinja(&c).render(&[Message::user("Hi")], true).unwrap(),
            "<|im_start|>system\nA conversation between a user and an LLM-based AI \
             assistant.<|im_end|>\n<|im_start|>user\nPing<|im_end|>\n<|im_start|>assistant\n\
             Pong<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn conv_template_rejects_other_roles() {
        let t = jinja(&mlc_chatml());
        match t.render(&[Message::new("tool", "42")], false) {
            Err(Error::Invalid(m)) => {
                assert!(m.contains("system, user or assistant, not tool"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match t.render(&[Message::user("a"), Message::system("b")], false) {
            Err(Error::Invalid(m)) => assert!(m.contains("only allowed as the first"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conv_template_json_round_trip() {
        let c = conv(json!({"roles": {"user": "U", "assistant": "A"}, "seps": ["\n"]}));
        // MLC's defaults.
        assert_eq!(c.name, None);
        assert_eq!(c.system_template, "{system_message}");
        assert_eq!(c.system_message, "");
        assert_eq!(c.system_prefix_token_ids, None);
        assert!(c.add_role_after_system_message);
        assert_eq!(c.role_templates.len(), 3);
        assert!(c.messages.is_empty() && c.stop_str.is_empty() && c.stop_token_ids.is_empty());
        assert_eq!(
            (c.role_content_sep.as_str(), c.role_empty_sep.as_str()),
            ("", "")
        );
        assert!(!c.use_function_calling && c.function_string.is_empty());
        assert_eq!(
            c.to_json(),
            json!({
                "system_template": "{system_message}",
                "system_message": "",
                "add_role_after_system_message": true,
                "roles": {"user": "U", "assistant": "A"},
                "role_templates": {
                    "user": "{user_message}",
                    "assistant": "{assistant_message}",
                    "tool": "{tool_message}"
                },
                "messages": [],
                "seps": ["\n"],
                "role_content_sep": "",
                "role_empty_sep": "",
                "stop_str": [],
                "stop_token_ids": [],
                "function_string": "",
                "use_function_calling": false
            })
        );

        let full = json!({
            "name": "llama-3",
            "system_template": "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>",
            "system_message": "You are a helpful, respectful and honest assistant.",
            "system_prefix_token_ids": [128000],
            "add_role_after_system_message": true,
            "roles": {"user": "<|start_header_id|>user", "assistant": "<|start_header_id|>assistant"},
            "role_templates": {
                "user": "{user_message}",
                "assistant": "{assistant_message}",
                "tool": "{tool_message}"
            },
            "messages": [["user", "hi"], ["assistant", null]],
            "seps": ["<|eot_id|>"],
            "role_content_sep": "<|end_header_id|>\n\n",
            "role_empty_sep": "<|end_header_id|>\n\n",
            "stop_str": [],
            "stop_token_ids": [128001, 128009],
            "function_string": "",
            "use_function_calling": false
        });
        let c = conv(full.clone());
        assert_eq!(c.messages[1], ("assistant".into(), None));
        assert_eq!(c.to_json(), full);
        assert_eq!(conv(c.to_json()), c);
    }

    #[test]
    fn conv_template_json_errors_name_the_field() {
        let base = || json!({"roles": {"user": "U", "assistant": "A"}, "seps": [""]});
        let cases: Vec<(&str, Value)> = vec![
            ("roles", json!({"seps": [""]})),
            ("seps", json!({"roles": {}})),
            ("roles.user", json!({"roles": {"user": 1}, "seps": [""]})),
            ("seps", json!({"roles": {}, "seps": []})),
            ("seps", json!({"roles": {}, "seps": ["a", "b", "c"]})),
            ("seps[1]", json!({"roles": {}, "seps": ["a", 2]})),
            ("system_message", {
                let mut v = base();
                v["system_message"] = Value::Null;
                v
            }),
            ("add_role_after_system_message", {
                let mut v = base();
                v["add_role_after_system_message"] = json!("no");
                v
            }),
            ("stop_token_ids[0]", {
                let mut v = base();
                v["stop_token_ids"] = json!([-1]);
                v
            }),
            ("system_prefix_token_ids", {
                let mut v = base();
                v["system_prefix_token_ids"] = json!(1);
                v
            }),
            ("messages[0]", {
                let mut v = base();
                v["messages"] = json!([["user"]]);
                v
            }),
            ("stop_str", {
                let mut v = base();
                v["stop_str"] = json!("</s>");
                v
            }),
            ("conv_template", json!([])),
        ];
        for (field, v) in cases {
            match ConvTemplate::from_json(&v) {
                Err(Error::Invalid(m)) => {
                    assert!(m.contains(&format!("`{field}`")), "{field}: {m}")
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    /// SmolLM2-Instruct's template: ChatML with a default system prompt.
    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// Llama 3.1's template without tools: a system turn with the knowledge cutoff always.
    const LLAMA31_TEMPLATE: &str = r#"{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: 26 Jul 2024\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}"#;

    fn same_renders(a: &ChatTemplate, b: &ChatTemplate) {
        let msgs = [
            Message::system("Sys"),
            Message::user("one"),
            Message::assistant("two"),
            Message::user("three"),
            Message::assistant("four"),
            Message::user("five"),
        ];
        for gen in [false, true] {
            for n in 1..=msgs.len() {
                // (An empty conversation is no MLC conversation: `as_prompt` fails on it.)
                for m in [&msgs[..n], &msgs[1..n]]
                    .into_iter()
                    .filter(|m| !m.is_empty())
                {
                    assert_eq!(a.render(m, gen).unwrap(), b.render(m, gen).unwrap());
                }
            }
        }
    }

    #[test]
    fn derive_from_smollm2_template() {
        let t = ChatTemplate::new(SMOLLM2_TEMPLATE, "<|im_start|>", "<|im_end|>").unwrap();
        let c = ConvTemplate::derive(&t, "smollm2", vec![2]).unwrap();
        assert_eq!(c.name.as_deref(), Some("smollm2"));
        assert_eq!(
            c.system_template,
            "<|im_start|>system\n{system_message}<|im_end|>\n"
        );
        assert_eq!(
            c.system_message,
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        );
        assert_eq!(c.roles["user"], "<|im_start|>user");
        assert_eq!(c.roles["assistant"], "<|im_start|>assistant");
        assert_eq!(c.seps, ["<|im_end|>\n"]);
        assert_eq!(c.role_content_sep, "\n");
        assert_eq!(c.role_empty_sep, "\n");
        assert!(c.add_role_after_system_message);
        assert_eq!(c.stop_str, ["<|im_end|>"]);
        assert_eq!(c.stop_token_ids, [2]);
        // The shape of MLC's own ChatML template, with SmolLM2's system message.
        let mut mlc = mlc_chatml();
        mlc.name = c.name.clone();
        mlc.system_message = c.system_message.clone();
        assert_eq!(c, mlc);
        same_renders(&t, &jinja(&c));
    }

    #[test]
    fn derive_from_llama31_template() {
        let t = ChatTemplate::new(LLAMA31_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>").unwrap();
        let c = ConvTemplate::derive(&t, "llama-3.1", vec![128001, 128008, 128009]).unwrap();
        assert_eq!(
            c.system_template,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge \
             Date: December 2023\nToday Date: 26 Jul 2024\n\n{system_message}<|eot_id|>"
        );
        assert_eq!(c.system_message, "");
        assert_eq!(c.roles["user"], "<|start_header_id|>user");
        assert_eq!(c.roles["assistant"], "<|start_header_id|>assistant");
        assert_eq!(c.seps, ["<|eot_id|>"]);
        assert_eq!(c.role_content_sep, "<|end_header_id|>\n\n");
        assert_eq!(c.role_empty_sep, "<|end_header_id|>\n\n");
        assert_eq!(c.stop_str, ["<|eot_id|>"]);
        assert_eq!(c.stop_token_ids, [128001, 128008, 128009]);
        let ours = ChatTemplate::new(c.to_jinja(), "<|begin_of_text|>", "<|eot_id|>").unwrap();
        same_renders(&t, &ours);
        // And the JSON MLC would read back.
        assert_eq!(ConvTemplate::from_json(&c.to_json()).unwrap(), c);
    }

    fn unsupported_because(r: Result<ConvTemplate>, why: &str) {
        match r {
            Err(Error::Unsupported(m)) => {
                assert!(
                    m.starts_with("chat template cannot be expressed as an MLC conv_template: "),
                    "{m}"
                );
                assert!(m.contains(why), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn derive_refuses_what_mlc_cannot_express() {
        // glim's ChatML fallback writes no system turn without a system message; MLC always
        // writes its system template there.
        let t = ChatTemplate::chatml("", "<|im_end|>");
        assert!(CHATML_TEMPLATE.contains("<|im_start|>"));
        unsupported_because(
            ConvTemplate::derive(&t, "chatml", vec![]),
            "without a system message",
        );

        // A format that changes on the third user turn.
        let src = CHATML_TEMPLATE.replace(
            "'<|im_end|>' + '\\n'",
            "('<|im_end|>\\n\\n' if loop.index0 >= 4 else '<|im_end|>\\n')",
        );
        let src = format!(
            "{{%- if messages[0]['role'] != 'system' -%}}{{{{- '<|im_start|>system\\nHi<|im_end|>\\n' -}}}}{{%- endif -%}}{src}"
        );
        let t = ChatTemplate::new(src, "", "<|im_end|>").unwrap();
        // The first two turns are plain ChatML with a default system prompt...
        assert_eq!(
            t.render(&[Message::user("a")], true).unwrap(),
            "<|im_start|>system\nHi<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n"
        );
        // ...the verification catches the third.
        unsupported_because(
            ConvTemplate::derive(&t, "odd", vec![]),
            "the template writes",
        );

        // A template that drops the system message.
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role != 'system' %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        unsupported_because(ConvTemplate::derive(&t, "x", vec![]), "verbatim");

        // One that rejects system messages.
        let t = ChatTemplate::new(
            "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        unsupported_because(
            ConvTemplate::derive(&t, "x", vec![]),
            "System role not supported",
        );
    }
}
