//! [`ChatEngine`]: a loaded model answering OpenAI-shaped requests. It renders messages
//! through the model's chat template, keeps the KV cache between requests (a conversation's
//! next turn only prefills what is new), streams chunks, stops on end-of-generation tokens
//! and stop strings, and counts usage. The browser package and the server are transports
//! around it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::request::{Input, Request, Sampling};
use super::tools::{self, Tools};
use crate::error::{Error, Result};
use crate::generate::{
    Continuation, GenerationParams, GenerationStats, SamplingParams, Session, StopReason,
};
use crate::text::{ChatTemplate, Tokenizer, ToolCall};

/// Sampling defaults a model folder sets (`mlc-chat-config.json`'s `temperature`, `top_p`,
/// `repetition_penalty`, `frequency_penalty`, `presence_penalty`); OpenAI's otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    pub temperature: f32,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
        }
    }
}

impl Defaults {
    /// The defaults an `mlc-chat-config.json` gives, OpenAI's where it gives none. They
    /// are held to the ranges a request's fields are: a folder's `temperature` of -5 is an
    /// error naming the file, not the default of every request that leaves it out.
    pub fn from_chat_config(chat: &Value) -> Result<Self> {
        let base = Self::default();
        let empty = serde_json::Map::new();
        let fields = chat.as_object().unwrap_or(&empty);
        let get = |k: &str, fallback: f32| -> Result<f32> {
            let x = super::request::sampling_number(fields, k).map_err(|e| match e {
                Error::Invalid(m) => Error::Invalid(format!("mlc-chat-config.json: {m}")),
                other => other,
            })?;
            Ok(x.unwrap_or(fallback))
        };
        Ok(Self {
            temperature: get("temperature", base.temperature)?,
            top_p: get("top_p", base.top_p)?,
            repetition_penalty: get("repetition_penalty", base.repetition_penalty)?,
            frequency_penalty: get("frequency_penalty", base.frequency_penalty)?,
            presence_penalty: get("presence_penalty", base.presence_penalty)?,
        })
    }
}

/// What answering requests needs besides the model: the chat template, the tokenizer, the
/// model's name and sampling defaults, with OpenAI's request checks and response shapes.
/// [`ChatEngine`] answers through it one request at a time; `glim serve` many at once
/// through a [`Batcher`](crate::generate::Batcher).
pub struct Protocol {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The name responses carry and requests may ask for.
    pub model_id: String,
    pub defaults: Defaults,
    /// The model's context, in tokens.
    pub context: usize,
}

/// A request made ready to generate: its prompt ids, generation settings and reply shape.
pub struct Prepared {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub reply: Reply,
}

/// A model answering requests, one at a time.
pub struct ChatEngine {
    pub session: Session,
    pub protocol: Protocol,
    interrupt: Arc<AtomicBool>,
    last: Option<GenerationStats>,
    requests: u64,
}

/// OpenAI's `finish_reason` for how generation ended.
fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::EndOfSequence | StopReason::StopString => "stop",
        StopReason::MaxTokens => "length",
        StopReason::Cancelled => "abort",
    }
}

impl Protocol {
    /// The prompt's token ids: messages through the chat template (with the request's
    /// `tools`, see [`tools::render`]), or the prompt as is.
    pub fn prompt_ids(&self, input: &Input, tools: Option<&Tools>) -> Result<Vec<u32>> {
        let text = match (input, tools) {
            (Input::Messages(messages), Some(_)) => tools::render(&self.template, messages, tools)?,
            (Input::Messages(messages), None) => self.template.render(messages, true)?,
            (Input::Prompt(prompt), _) => prompt.clone(),
        };
        self.tokenizer.encode_prompt(&text)
    }

    /// Generation settings for `sampling` with a prompt of `prompt_len` tokens: the
    /// requested token limit, or what is left of the context. `nonce` varies the seed of
    /// requests that give none.
    pub fn generation_params(
        &self,
        sampling: &Sampling,
        prompt_len: usize,
        nonce: u64,
    ) -> Result<GenerationParams> {
        let context = self.context;
        // The last generated token never needs a KV slot.
        let room = (context + 1).saturating_sub(prompt_len);
        if prompt_len >= context {
            return Err(Error::Invalid(format!(
                "the prompt is {prompt_len} tokens, which leaves no room in this model's context of {context} tokens; shorten the conversation"
            )));
        }
        let max_tokens = match sampling.max_tokens {
            Some(n) if n > room => {
                return Err(Error::Invalid(format!(
                    "the prompt ({prompt_len} tokens) plus max_tokens ({n}) exceed the context of {context} tokens; ask for at most {room} tokens"
                )))
            }
            Some(n) => n,
            None => room,
        };
        let d = &self.defaults;
        let temperature = sampling.temperature.unwrap_or(d.temperature);
        let seed = sampling.seed.unwrap_or_else(|| {
            // Greedy decoding draws nothing; sampling gets a fresh stream each request.
            web_time::SystemTime::now()
                .duration_since(web_time::UNIX_EPOCH)
                .map_or(0, |t| t.as_nanos() as u64)
                ^ nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        Ok(GenerationParams {
            sampling: SamplingParams {
                temperature,
                top_k: sampling.top_k.unwrap_or(0),
                top_p: sampling.top_p.unwrap_or(d.top_p),
                min_p: sampling.min_p.unwrap_or(0.0),
                repetition_penalty: sampling.repetition_penalty.unwrap_or(d.repetition_penalty),
                frequency_penalty: sampling.frequency_penalty.unwrap_or(d.frequency_penalty),
                presence_penalty: sampling.presence_penalty.unwrap_or(d.presence_penalty),
                seed,
                ..SamplingParams::default()
            },
            max_tokens,
            stop_strings: sampling.stop.clone(),
            ignore_eos: sampling.ignore_eos,
            grammar: sampling.grammar.clone(),
            grammar_after: None,
        })
    }

    /// Whether a request naming `model` (or none) is for this model.
    pub fn serves(&self, model: Option<&str>) -> bool {
        model.is_none_or(|m| m == self.model_id)
    }

    /// Everything about answering `request` (the `number`th) that needs no GPU: the model
    /// it names, its prompt, its settings checked against the context, its reply shape.
    pub fn prepare(&self, request: &Request, number: u64) -> Result<Prepared> {
        if !self.serves(request.model.as_deref()) {
            return Err(Error::Invalid(format!(
                "model {:?} is not loaded (this engine runs {:?})",
                request.model.as_deref().unwrap_or_default(),
                self.model_id
            )));
        }
        let prompt = self.prompt_ids(&request.input, request.tools.as_ref())?;
        let tools = request
            .tools
            .as_ref()
            .filter(|t| t.active())
            .map(|t| t.in_format(&self.template));
        let tools = tools.as_ref();
        let mut params = self.generation_params(&request.sampling, prompt.len(), number)?;
        // A required or named call holds the whole answer to the tools' parameters.
        if let Some(grammar) = tools.and_then(|t| t.grammar(&self.tokenizer)) {
            if params.grammar.is_some() {
                return Err(Error::Invalid(
                    "`response_format` and a required `tool_choice` cannot both shape the answer"
                        .into(),
                ));
            }
            params.grammar = Some(grammar);
        }
        // Under `auto`, a call the model opens is held to the tools from its opening on.
        if params.grammar.is_none() {
            params.grammar_after = tools.and_then(|t| t.grammar_after_opening(&self.tokenizer));
        }
        // A schema that does not compile is the request's error, before it is queued.
        Continuation::new(&self.tokenizer, &prompt, &params)?;
        let chat = matches!(request.input, Input::Messages(_));
        let reply = Reply {
            id: format!("{}-{number}", if chat { "chatcmpl" } else { "cmpl" }),
            created: web_time::SystemTime::now()
                .duration_since(web_time::UNIX_EPOCH)
                .map_or(0, |t| t.as_secs()),
            model: self.model_id.clone(),
            chat,
            stream: request.stream,
            include_usage: request.include_usage,
            first: true,
            tools: tools.cloned(),
            number,
            text: String::new(),
            sent: 0,
        };
        Ok(Prepared {
            prompt,
            params,
            reply,
        })
    }
}

impl ChatEngine {
    pub fn new(session: Session, template: ChatTemplate, model_id: impl Into<String>) -> Self {
        let protocol = Protocol {
            tokenizer: session.tokenizer.clone(),
            template,
            model_id: model_id.into(),
            defaults: Defaults::default(),
            context: session.model.context,
        };
        Self {
            session,
            protocol,
            interrupt: Arc::new(AtomicBool::new(false)),
            last: None,
            requests: 0,
        }
    }

    /// A flag that stops the answer being generated at its next token when set (the
    /// engine clears it when a request starts).
    pub fn interrupt_handle(&self) -> Arc<AtomicBool> {
        self.interrupt.clone()
    }

    /// Forgets the KV cache: the next request prefills from scratch.
    pub fn reset(&mut self) {
        self.session.reset();
    }

    /// The last request's speeds, as WebLLM's `runtimeStatsText` words them.
    pub fn runtime_stats_text(&self) -> String {
        match &self.last {
            Some(s) => format!(
                "prefill: {:.1} tok/s, decode: {:.1} tok/s",
                s.prefill_tokens_per_second(),
                s.decode_tokens_per_second()
            ),
            None => "no requests yet".into(),
        }
    }

    /// Answers `request`. When it streams, `on_chunk` gets each chunk object as OpenAI's
    /// server sends it (`chat.completion.chunk` or `text_completion`), the usage chunk last
    /// when asked for; the return value is the whole response object either way.
    pub async fn respond(
        &mut self,
        request: &Request,
        on_chunk: &mut dyn FnMut(Value),
    ) -> Result<Value> {
        self.requests += 1;
        let Prepared {
            prompt,
            params,
            mut reply,
        } = self.protocol.prepare(request, self.requests)?;
        let interrupt = self.interrupt.clone();
        interrupt.store(false, Ordering::SeqCst);
        let (text, stats) = self
            .session
            .generate(&prompt, &params, &mut |piece| {
                if let Some(chunk) = reply.text_chunk(piece) {
                    on_chunk(chunk);
                }
                !interrupt.load(Ordering::SeqCst)
            })
            .await?;
        reply
            .final_chunks(&text, &stats)
            .into_iter()
            .for_each(on_chunk);
        let response = reply.response(&text, &stats);
        self.last = Some(stats);
        Ok(response)
    }
}

/// OpenAI's `usage`, with WebLLM's `extra` speeds.
fn usage(s: &GenerationStats) -> Value {
    json!({
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.generated_tokens,
        "total_tokens": s.prompt_tokens + s.generated_tokens,
        "extra": {
            "prefill_tokens_per_s": s.prefill_tokens_per_second(),
            "decode_tokens_per_s": s.decode_tokens_per_second(),
            "time_to_first_token_s": s.prefill_seconds,
            "e2e_latency_s": s.prefill_seconds + s.decode_seconds,
            "reused_prompt_tokens": s.reused_tokens,
        }
    })
}

/// How the chunks and the response of one request look, as OpenAI's server shapes them.
pub struct Reply {
    id: String,
    created: u64,
    model: String,
    chat: bool,
    /// Whether the request streams.
    pub stream: bool,
    include_usage: bool,
    /// No chunk sent yet (the first chat chunk carries the role).
    first: bool,
    /// The tools offered, when calls are read back out of the answer.
    tools: Option<Tools>,
    /// The request's number (call ids are unique with it).
    number: u64,
    /// The answer so far and how much of it went out as content (with tools, text that may
    /// open a call is held back).
    text: String,
    sent: usize,
}

impl Reply {
    fn envelope(&self) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
        })
    }

    /// A streamed piece of text, or (with `finish`) the chunk that ends the answer.
    fn chunk(&mut self, text: Option<&str>, finish: Option<&str>) -> Value {
        self.delta_chunk(text.map(|t| json!({ "content": t })), finish)
    }

    /// A chunk with `delta`'s fields (chat) or its `content` as text (completions).
    fn delta_chunk(&mut self, fields: Option<Value>, finish: Option<&str>) -> Value {
        let mut c = self.envelope();
        let choice = if self.chat {
            let mut delta = json!({});
            if self.first {
                delta["role"] = json!("assistant");
            }
            if let Some(Value::Object(fields)) = &fields {
                for (k, v) in fields {
                    delta[k] = v.clone();
                }
            }
            json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null })
        } else {
            let text = fields
                .as_ref()
                .and_then(|f| f["content"].as_str())
                .unwrap_or("");
            json!({ "index": 0, "text": text, "finish_reason": finish, "logprobs": null })
        };
        self.first = false;
        c["choices"] = json!([choice]);
        c
    }

    /// The chunk carrying a new piece of the answer, when the request streams. With tools,
    /// text from a possible call's opening on waits for the end, where it turns out to be
    /// calls or text.
    pub fn text_chunk(&mut self, text: &str) -> Option<Value> {
        if !self.stream {
            return None;
        }
        let Some(tools) = &self.tools else {
            return Some(self.chunk(Some(text), None));
        };
        self.text.push_str(text);
        let safe = safe_text_end(&self.text, tools.format.openings());
        if safe <= self.sent {
            return None;
        }
        let piece = self.text[self.sent..safe].to_string();
        self.sent = safe;
        Some(self.chunk(Some(&piece), None))
    }

    /// The calls in `text` when the request offered tools.
    fn calls(&self, text: &str) -> (String, Vec<ToolCall>) {
        match &self.tools {
            Some(tools) => tools::split_calls(text, tools, self.number),
            None => (text.to_string(), Vec::new()),
        }
    }

    /// The chunks that end a stream of the answer `text`: what was held back (text, or
    /// each call's name and arguments as `delta.tool_calls`), the finish reason, then usage
    /// when asked for; none when the request does not stream.
    pub fn final_chunks(&mut self, text: &str, stats: &GenerationStats) -> Vec<Value> {
        if !self.stream {
            return Vec::new();
        }
        let mut chunks = Vec::new();
        let mut reason = finish_reason(stats.stop_reason);
        if self.tools.is_some() {
            let (content, calls) = self.calls(text);
            let rest = if calls.is_empty() {
                text
            } else {
                content.as_str()
            };
            if rest.len() > self.sent && rest.is_char_boundary(self.sent) {
                let piece = rest[self.sent..].to_string();
                chunks.push(self.chunk(Some(&piece), None));
            }
            for (index, call) in calls.iter().enumerate() {
                let opening = json!({ "tool_calls": [{ "index": index, "id": call.id,
                    "type": "function", "function": { "name": call.name, "arguments": "" } }] });
                chunks.push(self.delta_chunk(Some(opening), None));
                let arguments = json!({ "tool_calls": [{ "index": index,
                    "function": { "arguments": call.arguments } }] });
                chunks.push(self.delta_chunk(Some(arguments), None));
            }
            if !calls.is_empty() {
                reason = "tool_calls";
            }
        }
        chunks.push(self.chunk(None, Some(reason)));
        if self.include_usage {
            let mut last = self.envelope();
            last["choices"] = json!([]);
            last["usage"] = usage(stats);
            chunks.push(last);
        }
        chunks
    }

    /// The whole response object.
    pub fn response(&self, text: &str, stats: &GenerationStats) -> Value {
        let (content, calls) = self.calls(text);
        if !calls.is_empty() {
            let mut response = self.response(&content, stats);
            let message = &mut response["choices"][0]["message"];
            if content.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = calls
                .iter()
                .map(|c| {
                    json!({ "id": c.id, "type": "function",
                            "function": { "name": c.name, "arguments": c.arguments } })
                })
                .collect();
            response["choices"][0]["finish_reason"] = json!("tool_calls");
            return response;
        }
        let reason = finish_reason(stats.stop_reason);
        let mut response = self.envelope();
        response["object"] = json!(if self.chat {
            "chat.completion"
        } else {
            "text_completion"
        });
        response["choices"] = json!([if self.chat {
            json!({ "index": 0, "message": { "role": "assistant", "content": text },
                    "finish_reason": reason, "logprobs": null })
        } else {
            json!({ "index": 0, "text": text, "finish_reason": reason, "logprobs": null })
        }]);
        response["usage"] = usage(stats);
        response
    }
}

/// How much of `text` may stream as content while the answer may still open a call with
/// one of `openings`: up to the first opening, or before a tail that could begin one, less
/// trailing whitespace (a call's text drops the whitespace before it).
fn safe_text_end(text: &str, openings: &[&str]) -> usize {
    let opened = openings.iter().filter_map(|open| text.find(open)).min();
    let end = opened.unwrap_or_else(|| {
        let partial = |open: &str| {
            (1..open.len())
                .rev()
                .find(|&n| text.ends_with(&open[..n]))
                .unwrap_or(0)
        };
        text.len() - openings.iter().map(|open| partial(open)).max().unwrap_or(0)
    });
    text[..end].trim_end().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CallFormat;

    #[test]
    fn text_that_may_open_a_call_is_held_back() {
        let hermes = CallFormat::Hermes.openings();
        assert_eq!(safe_text_end("Sure. <tool_c", hermes), 5);
        assert_eq!(safe_text_end("Sure. <tool_call>\n{", hermes), 5);
        assert_eq!(safe_text_end("Sure. It is <", hermes), 11);
        let llama = CallFormat::Llama3.openings();
        assert_eq!(safe_text_end("Sure. {\"na", llama), 5);
        assert_eq!(safe_text_end("Sure. <|python", llama), 5);
        assert_eq!(safe_text_end("a {b} c", llama), 7);
    }

    #[test]
    fn a_chat_config_sets_the_sampling_defaults_it_gives() {
        let defaults =
            Defaults::from_chat_config(&json!({"temperature": 0.6, "top_p": 0.9})).unwrap();
        assert_eq!(
            (
                defaults.temperature,
                defaults.top_p,
                defaults.presence_penalty
            ),
            (0.6, 0.9, 0.0)
        );
        assert_eq!(
            Defaults::from_chat_config(&json!({})).unwrap(),
            Defaults::default()
        );
        for (field, value) in [
            ("temperature", json!(-5)),
            ("top_p", json!(0)),
            ("repetition_penalty", json!(0)),
            ("presence_penalty", json!("high")),
        ] {
            let e = Defaults::from_chat_config(&json!({ field: value }))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("mlc-chat-config.json") && e.contains(field),
                "{e}"
            );
        }
    }
}
