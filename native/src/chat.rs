//! Interactive chat: read a line, render the whole conversation through the chat template,
//! stream the answer. The session reuses the KV cache for the part of the conversation it
//! has already seen, so each turn only prefills what is new.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glim::generate::{GenerationParams, Session, StopReason};
use glim::text::{ChatTemplate, Message};

use crate::run::{stats_line, Streamer};
use crate::{model, one_line, CliError, CliResult};

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
    /// The system message (if any) and then the turns so far.
    history: Vec<Message>,
    /// How many messages at the start of `history` are system messages, kept on /clear and
    /// when old turns are dropped.
    system_len: usize,
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
    let history: Vec<Message> = system.into_iter().map(Message::system).collect();
    let mut chat = Chat {
        session,
        template,
        params,
        system_len: history.len(),
        history,
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
                chat.history.truncate(chat.system_len);
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
        let before = chat.history.clone();
        chat.history.push(Message::user(text));
        match chat.answer() {
            Ok(reply) => chat.history.push(Message::assistant(reply)),
            Err(TurnError::Engine(e)) => {
                // The conversation stays as it was, turns dropped for room included; only
                // the message that could not be answered stays out of it (a template may
                // insist that roles alternate).
                chat.history = before;
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

    /// The conversation as token ids, dropping the oldest turns when it would not leave
    /// room for an answer in the context. When it has to drop, it drops down to three
    /// quarters of the room, so the next turns do not each drop (and re-prefill) again.
    fn prompt_ids(&mut self) -> CliResult<Vec<u32>> {
        let context = self.session.model.context;
        let room = context.saturating_sub(self.params.max_tokens);
        let mut ids = self.encode()?;
        if ids.len() <= room {
            return Ok(ids);
        }
        let target = room - room / 4;
        let mut dropped = 0;
        while ids.len() > target && drop_oldest_turn(&mut self.history, self.system_len) {
            dropped += 1;
            ids = self.encode()?;
        }
        if dropped > 0 {
            eprintln!(
                "(the conversation outgrew the context of {context} tokens: dropped the oldest {dropped} turn{})",
                if dropped == 1 { "" } else { "s" }
            );
        }
        // Still too long (one message alone): the engine says so.
        Ok(ids)
    }

    fn encode(&self) -> CliResult<Vec<u32>> {
        let text = self.template.render(&self.history, true)?;
        model::encode(&self.session.tokenizer, &text)
    }
}

/// Removes the oldest turn (a user message and the answers to it) after the first
/// `system_len` messages, never the last message (the one being answered). `false` when
/// there is nothing left to drop.
fn drop_oldest_turn(history: &mut Vec<Message>, system_len: usize) -> bool {
    let last = history.len().saturating_sub(1);
    if last <= system_len {
        return false;
    }
    let mut end = system_len + 1;
    while end < last && history[end].role != "user" {
        end += 1;
    }
    history.drain(system_len..end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(history: &[Message]) -> Vec<&str> {
        history.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn drops_whole_turns_and_keeps_system_and_last() {
        let mut h = vec![
            Message::system("s"),
            Message::user("u1"),
            Message::assistant("a1"),
            Message::user("u2"),
            Message::assistant("a2"),
            Message::user("u3"),
        ];
        assert!(drop_oldest_turn(&mut h, 1));
        assert_eq!(contents(&h), ["s", "u2", "a2", "u3"]);
        assert!(drop_oldest_turn(&mut h, 1));
        assert_eq!(contents(&h), ["s", "u3"]);
        assert!(!drop_oldest_turn(&mut h, 1));
        assert_eq!(contents(&h), ["s", "u3"]);
    }

    #[test]
    fn drops_without_system_message() {
        let mut h = vec![
            Message::user("u1"),
            Message::assistant("a1"),
            Message::user("u2"),
        ];
        assert!(drop_oldest_turn(&mut h, 0));
        assert_eq!(contents(&h), ["u2"]);
        assert!(!drop_oldest_turn(&mut h, 0));
        let mut empty = Vec::new();
        assert!(!drop_oldest_turn(&mut empty, 0));
    }
}
