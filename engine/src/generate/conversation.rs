//! A conversation held across turns (the CLI's chat): its messages, rendered through the
//! chat template each turn, with the oldest turns dropped when it outgrows the context.
//! The system message always stays.

use crate::error::Result;
use crate::text::{ChatTemplate, Message, Tokenizer};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The system message (if any), then the turns so far.
    pub messages: Vec<Message>,
    /// How many messages at the start are system messages, kept by `clear` and when old
    /// turns are dropped.
    system_len: usize,
}

impl Conversation {
    pub fn new(system: Option<String>) -> Self {
        let messages: Vec<Message> = system.into_iter().map(Message::system).collect();
        Self {
            system_len: messages.len(),
            messages,
        }
    }

    /// Starts over, keeping the system message.
    pub fn clear(&mut self) {
        self.messages.truncate(self.system_len);
    }

    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// The conversation as prompt token ids, with room for `max_tokens` new ones in a
    /// context of `context` tokens: when it would not fit, the oldest turns are dropped, down
    /// to three quarters of the room, so the next turns do not each drop (and re-prefill)
    /// again. Returns the ids and how many turns were dropped; a conversation that still does
    /// not fit (one long message) is left for the generator to refuse.
    pub fn prompt_ids(
        &mut self,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        context: usize,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, usize)> {
        let encode =
            |messages: &[Message]| tokenizer.encode_prompt(&template.render(messages, true)?);
        let room = context.saturating_sub(max_tokens);
        let mut ids = encode(&self.messages)?;
        if ids.len() <= room {
            return Ok((ids, 0));
        }
        let target = room - room / 4;
        let mut dropped = 0;
        while ids.len() > target && self.drop_oldest_turn() {
            dropped += 1;
            ids = encode(&self.messages)?;
        }
        Ok((ids, dropped))
    }

    /// Removes the oldest turn (a user message and the answers to it) after the system
    /// messages, never the last message (the one being answered). `false` when there is
    /// nothing left to drop.
    fn drop_oldest_turn(&mut self) -> bool {
        let (history, system_len) = (&mut self.messages, self.system_len);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(c: &Conversation) -> Vec<&str> {
        c.messages.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn drops_whole_turns_and_keeps_system_and_last() {
        let mut c = Conversation::new(Some("s".into()));
        for m in [
            Message::user("u1"),
            Message::assistant("a1"),
            Message::user("u2"),
            Message::assistant("a2"),
            Message::user("u3"),
        ] {
            c.push(m);
        }
        assert!(c.drop_oldest_turn());
        assert_eq!(contents(&c), ["s", "u2", "a2", "u3"]);
        assert!(c.drop_oldest_turn());
        assert_eq!(contents(&c), ["s", "u3"]);
        assert!(!c.drop_oldest_turn());
        assert_eq!(contents(&c), ["s", "u3"]);
        c.clear();
        assert_eq!(contents(&c), ["s"]);
    }

    #[test]
    fn drops_without_system_message() {
        let mut c = Conversation::new(None);
        for m in [
            Message::user("u1"),
            Message::assistant("a1"),
            Message::user("u2"),
        ] {
            c.push(m);
        }
        assert!(c.drop_oldest_turn());
        assert_eq!(contents(&c), ["u2"]);
        assert!(!c.drop_oldest_turn());
        assert!(!Conversation::new(None).drop_oldest_turn());
    }
}
