//! Interactive chat: read a line, render the whole conversation through the chat template,
//! stream the answer. The session reuses the KV cache for the part of the conversation it
//! has already seen, so each turn only prefills what is new.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glim::generate::{Conversation, GenerationParams, Session, StopReason};
use glim::text::{ChatTemplate, Message};

use crate::run::{stats_line, Streamer};
use crate::{one_line, CliError, CliResult};

const HELP: &str =
    "/clear starts a new conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer";

/// Why a turn failed: the engine refused it (the chat goes on) or stdout is gone (it ends).
enum TurnError {
    Engine(CliError),
    Output(CliError),
}

impl From<CliError> for TurnError {
    fn from(e: CliError) -> Self {
        TurnError::Engine(e)
    }
}

impl From<glim::Error> for TurnError {
    fn from(e: glim::Error) -> Self {
        TurnError::Engine(e.into())
    }
}

struct Chat {
    session: Session,
    template: ChatTemplate,
    params: GenerationParams,
    conversation: Conversation,
    /// Set while an answer streams: Ctrl-C then stops the answer instead of quitting.
    streaming: Arc<AtomicBool>,
    /// Set by Ctrl-C while an answer streams.
    stop: Arc<AtomicBool>,
}

pub fn chat(
    session: Session,
    template: ChatTemplate,
    system: Option<String>,
    params: GenerationParams,
    name: &str,
) -> CliResult<()> {
    let mut chat = Chat {
        session,
        template,
        params,
        conversation: Conversation::new(system),
        streaming: Arc::new(AtomicBool::new(false)),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (streaming, stop) = (chat.streaming.clone(), chat.stop.clone());
    let handler = ctrlc::set_handler(move || {
        if streaming.load(Ordering::SeqCst) {
            stop.store(true, Ordering::SeqCst);
        } else {
            // At the prompt: quit, on a fresh line.
            eprintln!();
            std::process::exit(130);
        }
    });
    if let Err(e) = handler {
        eprintln!("warning: Ctrl-C will quit instead of stopping an answer: {e}");
    }

    eprintln!("chatting with {name}: {HELP}");
    let mut input = io::stdin().lock();
    loop {
        eprint!("> ");
        let _ = io::stderr().flush();
        let mut line = Vec::new();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError(format!("reading stdin: {e}")))?;
        if read == 0 {
            // Ctrl-D (end of input).
            eprintln!();
            return Ok(());
        }
        let line = String::from_utf8_lossy(&line);
        let text = line.trim_end_matches(['\n', '\r']);
        match text.trim() {
            "" => continue,
            "/exit" | "/quit" | "/bye" => return Ok(()),
            "/clear" => {
                chat.conversation.clear();
                chat.session.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            "/help" | "/?" => {
                eprintln!("{HELP}");
                continue;
            }
            command if command.starts_with('/') && !command.contains(char::is_whitespace) => {
                eprintln!("unknown command {command}: {HELP}");
                continue;
            }
            _ => {}
        }
        let before = chat.conversation.clone();
        chat.conversation.push(Message::user(text));
        match chat.answer() {
            Ok(reply) => chat.conversation.push(Message::assistant(reply)),
            Err(TurnError::Engine(e)) => {
                // The conversation stays as it was, turns dropped for room included; only
                // the message that could not be answered stays out of it (a template may
                // insist that roles alternate).
                chat.conversation = before;
                eprintln!("error: {}", one_line(&e.0));
                eprintln!("(the conversation so far is kept; that message was not added to it)");
            }
            Err(TurnError::Output(e)) => return Err(e),
        }
    }
}

impl Chat {
    /// Answers the last (user) message: streams the answer to stdout and returns the text
    /// shown, which is what goes into the conversation.
    fn answer(&mut self) -> Result<String, TurnError> {
        let ids = self.prompt_ids()?;
        let mut out = Streamer::new();
        let mut shown = String::new();
        let stop = self.stop.clone();
        stop.store(false, Ordering::SeqCst);
        self.streaming.store(true, Ordering::SeqCst);
        let result = self
            .session
            .generate_blocking(&ids, &self.params, &mut |piece| {
                if stop.load(Ordering::SeqCst) || !out.push(piece) {
                    return false;
                }
                shown.push_str(piece);
                true
            });
        self.streaming.store(false, Ordering::SeqCst);
        let written = out.finish();
        let (_, stats) = result?;
        written.map_err(TurnError::Output)?;
        if stats.stop_reason == StopReason::Cancelled && self.stop.load(Ordering::SeqCst) {
            eprintln!("(stopped)");
        }
        eprintln!("{}", stats_line(&stats));
        Ok(shown)
    }

    /// The conversation as token ids, the oldest turns dropped (and said so) when it would
    /// not leave room for an answer.
    fn prompt_ids(&mut self) -> CliResult<Vec<u32>> {
        let context = self.session.model.context;
        let (ids, dropped) = self.conversation.prompt_ids(
            &self.template,
            &self.session.tokenizer,
            context,
            self.params.max_tokens,
        )?;
        if dropped > 0 {
            eprintln!(
                "(the conversation outgrew the context of {context} tokens: dropped the oldest {dropped} turn{})",
                if dropped == 1 { "" } else { "s" }
            );
        }
        Ok(ids)
    }
}
