//! [`ChatEngine`]: a loaded model answering OpenAI-shaped requests. It renders messages
//! through the model's chat template, keeps the KV cache between requests (a conversation's
//! next turn only prefills what is new), streams chunks, stops on end-of-generation tokens
//! and stop strings, and counts usage. The browser package and the server are transports
//! around it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::request::{Input, Request, Sampling};
use crate::error::{Error, Result};
use crate::generate::{GenerationParams, GenerationStats, SamplingParams, Session, StopReason};
use crate::text::ChatTemplate;

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
    /// The defaults an `mlc-chat-config.json` gives, OpenAI's where it gives none.
    pub fn from_chat_config(chat: &Value) -> Self {
        let base = Self::default();
        let get = |k: &str, fallback: f32| {
            chat.get(k)
                .and_then(Value::as_f64)
                .map_or(fallback, |x| x as f32)
        };
        Self {
            temperature: get("temperature", base.temperature),
            top_p: get("top_p", base.top_p),
            repetition_penalty: get("repetition_penalty", base.repetition_penalty),
            frequency_penalty: get("frequency_penalty", base.frequency_penalty),
            presence_penalty: get("presence_penalty", base.presence_penalty),
        }
    }
}

/// A model answering requests, one at a time.
pub struct ChatEngine {
    pub session: Session,
    pub template: ChatTemplate,
    /// The name responses carry and requests may ask for.
    pub model_id: String,
    pub defaults: Defaults,
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

impl ChatEngine {
    pub fn new(session: Session, template: ChatTemplate, model_id: impl Into<String>) -> Self {
        Self {
            session,
            template,
            model_id: model_id.into(),
            defaults: Defaults::default(),
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

    /// The prompt's token ids: messages through the chat template, or the prompt as is.
    pub fn prompt_ids(&self, input: &Input) -> Result<Vec<u32>> {
        let text = match input {
            Input::Messages(messages) => self.template.render(messages, true)?,
            Input::Prompt(prompt) => prompt.clone(),
        };
        self.session.tokenizer.encode_prompt(&text)
    }

    /// Generation settings for `sampling` with a prompt of `prompt_len` tokens: the
    /// requested token limit, or what is left of the context.
    pub fn generation_params(
        &self,
        sampling: &Sampling,
        prompt_len: usize,
    ) -> Result<GenerationParams> {
        let context = self.session.model.context;
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
                ^ self.requests.wrapping_mul(0x9E37_79B9_7F4A_7C15)
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
        })
    }

    /// Answers `request`. When it streams, `on_chunk` gets each chunk object as OpenAI's
    /// server sends it (`chat.completion.chunk` or `text_completion`), the usage chunk last
    /// when asked for; the return value is the whole response object either way.
    pub async fn respond(
        &mut self,
        request: &Request,
        on_chunk: &mut dyn FnMut(Value),
    ) -> Result<Value> {
        if let Some(asked) = &request.model {
            if asked != &self.model_id {
                return Err(Error::Invalid(format!(
                    "model {asked:?} is not loaded (this engine runs {:?})",
                    self.model_id
                )));
            }
        }
        self.requests += 1;
        let ids = self.prompt_ids(&request.input)?;
        let params = self.generation_params(&request.sampling, ids.len())?;
        let chat = matches!(request.input, Input::Messages(_));
        let id = format!(
            "{}-{}",
            if chat { "chatcmpl" } else { "cmpl" },
            self.requests
        );
        let created = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        let shape = ChunkShape {
            id: &id,
            created,
            model: &self.model_id,
            chat,
        };
        let interrupt = self.interrupt.clone();
        interrupt.store(false, Ordering::SeqCst);
        let mut first = true;
        let stream = request.stream;
        let (text, stats) = self
            .session
            .generate(&ids, &params, &mut |piece| {
                if stream {
                    on_chunk(shape.chunk(Some(piece), first, None));
                    first = false;
                }
                !interrupt.load(Ordering::SeqCst)
            })
            .await?;
        let reason = finish_reason(stats.stop_reason);
        let usage = usage(&stats);
        if stream {
            on_chunk(shape.chunk(None, first, Some(reason)));
            if request.include_usage {
                let mut last = shape.envelope();
                last["choices"] = json!([]);
                last["usage"] = usage.clone();
                on_chunk(last);
            }
        }
        self.last = Some(stats);
        let mut response = shape.envelope();
        response["object"] = json!(if chat {
            "chat.completion"
        } else {
            "text_completion"
        });
        response["choices"] = json!([if chat {
            json!({ "index": 0, "message": { "role": "assistant", "content": text },
                    "finish_reason": reason, "logprobs": null })
        } else {
            json!({ "index": 0, "text": text, "finish_reason": reason, "logprobs": null })
        }]);
        response["usage"] = usage;
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

/// What every chunk and response of one request shares.
struct ChunkShape<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    chat: bool,
}

impl ChunkShape<'_> {
    fn envelope(&self) -> Value {
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
        })
    }

    /// A streamed piece of text, or (with `finish`) the chunk that ends the answer.
    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&str>) -> Value {
        let mut c = self.envelope();
        let choice = if self.chat {
            let mut delta = json!({});
            if first {
                delta["role"] = json!("assistant");
            }
            if let Some(t) = text {
                delta["content"] = json!(t);
            }
            json!({ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null })
        } else {
            json!({ "index": 0, "text": text.unwrap_or(""), "finish_reason": finish,
                    "logprobs": null })
        };
        c["choices"] = json!([choice]);
        c
    }
}
