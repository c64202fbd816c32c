//! Constrained decoding: a grammar (a JSON Schema, a Lark grammar or a regular expression)
//! compiled by llguidance against the model's vocabulary, and at each step the set of
//! tokens that keep the text inside it, as a bitmask the GPU applies to the logits before
//! it picks (`kernels::mask`).
//!
//! llguidance sees the vocabulary as the bytes each token stands for; special tokens (the
//! chat template's markers) are marked so no grammar spells them out of text. The parser
//! factory, which indexes the vocabulary once, is built on first use and kept with the
//! tokenizer.

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::earley::SlicedBiasComputer;
use llguidance::toktrie::{InferenceCapabilities, TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::kernels::mask;
use crate::text::Tokenizer;

/// What an answer must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// JSON valid against this JSON Schema (`{"type": "object"}`: any object).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax (https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md).
    Lark(String),
    /// Text matching this regular expression as a whole.
    Regex(String),
}

impl Grammar {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    pub fn json_object() -> Self {
        Grammar::JsonSchema(serde_json::json!({ "type": "object" }))
    }

    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Grammar::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            Grammar::Regex(rx) => TopLevelGrammar::from_regex(rx),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Grammar::JsonSchema(_) => "JSON schema",
            Grammar::Lark(_) => "grammar",
            Grammar::Regex(_) => "regular expression",
        }
    }
}

/// One sequence's grammar state: which tokens may come next, advanced token by token.
pub struct Constraint {
    matcher: Matcher,
    /// The tokenizer's vocabulary size (mask bits past it stay clear).
    vocab: usize,
}

impl Constraint {
    /// Compiles `grammar` for `tokenizer`'s vocabulary. A grammar llguidance cannot
    /// compile (a malformed or unsupported schema, a syntax error) is `Error::Invalid`
    /// naming the problem.
    pub fn new(tokenizer: &Tokenizer, grammar: &Grammar) -> Result<Self> {
        let refused = |e: &dyn std::fmt::Display| {
            Error::Invalid(format!("the {} does not compile: {e}", grammar.kind()))
        };
        let factory = tokenizer.grammar_factory()?;
        let parser = factory
            .create_parser(grammar.top_level())
            .map_err(|e| refused(&e))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(refused(&e));
        }
        Ok(Self {
            matcher,
            vocab: tokenizer.vocab_size(),
        })
    }

    /// The tokens allowed next as a mask row of `words` u32s (see [`mask::words`]), bit set
    /// = allowed; only end-of-sequence once the grammar is complete.
    pub fn mask(&mut self, words: usize) -> Result<Vec<u32>> {
        let allowed = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| Error::Invalid(format!("constrained decoding failed: {e}")))?;
        let mut row = vec![0u32; words];
        let bits = allowed.as_slice();
        let n = bits.len().min(words).min(mask::words(self.vocab));
        row[..n].copy_from_slice(&bits[..n]);
        // Bits past the vocabulary (llguidance rounds up) would let padding rows win.
        let tail = self.vocab % 32;
        if tail != 0 && n == mask::words(self.vocab) {
            row[n - 1] &= (1u32 << tail) - 1;
        }
        if row.iter().all(|&w| w == 0) {
            return Err(Error::Invalid(
                "constrained decoding failed: the grammar allows no token here".into(),
            ));
        }
        Ok(row)
    }

    /// Advances past `token`, which the last mask allowed.
    pub fn accept(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| Error::Invalid(format!("constrained decoding failed: {e}")))
    }

    /// Advances past `tokens` if the grammar allows every one of them; `false` (and the
    /// state unchanged) otherwise.
    pub fn accept_all(&mut self, tokens: &[u32]) -> bool {
        match self.matcher.validate_tokens(tokens) {
            Ok(n) if n == tokens.len() => self.matcher.consume_tokens(tokens).is_ok(),
            _ => false,
        }
    }

    /// Whether the grammar is complete and allows nothing more but the end.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// The vocabulary as llguidance sees it: a trie of token bytes, and glim's tokenizer for
/// text llguidance tokenizes itself (a grammar's literal strings).
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        match std::str::from_utf8(s) {
            Ok(text) => match self.tokenizer.encode(text, false) {
                Ok(ids) => ids,
                Err(_) => self.trie.greedy_tokenize(s),
            },
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// Tokens longer than this are left out of the trie (no real vocabulary has one; a hostile
/// one could make the trie's offsets overflow).
const MAX_TOKEN_BYTES: usize = 1024;

/// The parser factory for `tokenizer` (built by [`Tokenizer::grammar_factory`]).
pub(crate) fn build_factory(
    tokenizer: &Tokenizer,
) -> std::result::Result<Arc<ParserFactory>, String> {
    let vocab = tokenizer.vocab_size();
    let special = tokenizer.special_ids();
    let words: Vec<Vec<u8>> = (0..vocab as u32)
        .map(|id| {
            let bytes = tokenizer.token_bytes(id).unwrap_or_default();
            if bytes.len() > MAX_TOKEN_BYTES {
                Vec::new()
            } else if special.binary_search(&id).is_ok() {
                // llguidance's mark for a special token: 0xFF, then its name.
                let mut marked = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                marked.extend_from_slice(bytes);
                marked
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let eog = tokenizer.end_of_generation();
    let eos = tokenizer.eos_id().or(eog.first().copied()).ok_or_else(|| {
        "constrained decoding needs an end-of-sequence token, and this tokenizer has none"
            .to_string()
    })?;
    let info = TokRxInfo {
        tok_bos: tokenizer.bos_id(),
        tok_pad: tokenizer.pad_id(),
        tok_unk: tokenizer.unk_id(),
        ..TokRxInfo::new(vocab as u32, eos)
    };
    let ends = if eog.is_empty() {
        vec![eos]
    } else {
        eog.to_vec()
    };
    // TokTrie asserts what it expects of a vocabulary; a hostile one is an error, not a
    // panic.
    let trie = std::panic::catch_unwind(|| TokTrie::from(&info, &words).with_eos_tokens(&ends))
        .map_err(|_| "this vocabulary cannot be indexed for constrained decoding".to_string())?;
    let env: TokEnv = Arc::new(Vocabulary {
        trie,
        tokenizer: tokenizer.clone(),
    });
    let caps = InferenceCapabilities::default();
    let mut factory = ParserFactory::new(&env, caps, &SlicedBiasComputer::general_slices())
        .map_err(|e| format!("this vocabulary cannot be constrained: {e}"))?;
    factory.quiet();
    *factory.limits_mut() = ParserLimits::default();
    Ok(Arc::new(factory))
}
