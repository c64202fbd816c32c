//! Text ⇄ token ids, on top of Hugging Face's `tokenizers` crate, built either from a GGUF
//! file's vocabulary (so a GGUF model needs nothing else) or from a `tokenizer.json`.
//!
//! # GGUF vocabularies, the llama.cpp way
//!
//! A GGUF file carries no tokenizer program, only data: `tokenizer.ggml.model` names the
//! algorithm, `tokenizer.ggml.pre` the pre-tokenizer, and arrays hold the tokens, their types
//! and scores or the BPE merges. The ids must be exactly the ones llama.cpp produces for the
//! same file (the model was converted and tested with it), so every choice below copies
//! `src/llama-vocab.cpp` and `src/unicode.cpp`:
//!
//! * `gpt2`: byte-level BPE. The text is split by the list of regexes llama.cpp uses for the
//!   file's `tokenizer.ggml.pre` (see [`SUPPORTED_PRE_TOKENIZERS`]), each regex splitting the
//!   pieces the previous one left and keeping the text between matches as pieces too (a
//!   `Split` with `Isolated` behaviour); then every byte is mapped to GPT-2's printable
//!   stand-in and the merges apply in rank order. Merges split at the first space after the
//!   first byte and the first occurrence of a pair wins, as in llama.cpp.
//! * `llama`: SentencePiece BPE. llama.cpp prefixes a space to every piece of raw text that
//!   starts the input or follows a special token, writes spaces as `▁`, then repeatedly
//!   merges the adjacent pair whose concatenation is the highest-scoring token (leftmost on
//!   ties); symbols that are no token become `<0xNN>` byte tokens. That is a BPE whose merges
//!   are every split of every token into two tokens, ranked by the merged token's score,
//!   which is how `tokenizers` (and Hugging Face's own Llama conversion) express it.
//!
//! Control, user-defined and unknown tokens (token types 3, 4 and 2) are added tokens, so
//! `<|im_start|>` in the text is that one id, and text between them is tokenized alone, as
//! llama.cpp does with `parse_special = true`.
//!
//! # Decoding
//!
//! Decoding works on bytes: each token id maps to the bytes it stands for (GPT-2's byte
//! stand-ins undone, `▁` back to a space, `<0xNN>` to its byte), and text is made only from
//! whole UTF-8 sequences. That is what lets [`StreamDecoder`] hand out text token by token
//! without ever splitting a character that spans several byte tokens.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use llguidance::ParserFactory;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::formats::gguf::GgufHeader;

/// GGUF token types (`llama_token_type` in llama.cpp).
mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const BYTE: i32 = 6;
}

/// SentencePiece's stand-in for a space.
const SPM_SPACE: &str = "\u{2581}";

/// Token texts llama.cpp treats as end of generation whatever the file says (its list in
/// `llama_vocab::impl::load`), so chat models stop at the end of their turn.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

// ---------------------------------------------------------------------------------------
// Pre-tokenizer regexes, transcribed from llama.cpp's `llm_tokenizer_bpe` constructor.
// ---------------------------------------------------------------------------------------

const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_BAILINGMOE: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const RE_DEEPSEEK3: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;
const RE_BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// How llama.cpp pre-tokenizes for one family of `tokenizer.ggml.pre` values.
struct PreTokenizerSpec {
    /// Applied in order, each to the pieces the previous ones left.
    regexes: &'static [&'static str],
    /// Look a whole piece up in the vocabulary before merging (`ignore_merges`).
    ignore_merges: bool,
    /// Whether a BOS token is added when the file does not say (`add_bos` default).
    add_bos: bool,
}

const fn spec(regexes: &'static [&'static str]) -> PreTokenizerSpec {
    PreTokenizerSpec {
        regexes,
        ignore_merges: false,
        add_bos: false,
    }
}

/// Every `tokenizer.ggml.pre` value glim understands, grouped by the regexes llama.cpp uses.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "dbrx",
    "smaug-bpe",
    "glm4",
    "chatglm-bpe",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "mpt",
    "olmo",
    "jais",
    "trillion",
    "granite-docling",
    "exaone4",
    "starcoder",
    "refact",
    "command-r",
    "smollm",
    "codeshell",
    "exaone",
    "minerva-7b",
    "mellum2",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "megrez",
    "stablelm2",
    "hunyuan",
    "solar-open",
    "grok-2",
    "qwen35",
    "falcon",
    "deepseek-coder",
    "deepseek-v3",
    "hunyuan-dense",
    "joyai-llm",
    "hy_v4",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "minimax-m2",
    "tekken",
    "seed-coder",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "poro-chat",
    "bloom",
    "gpt3-finnish",
    "viking",
];

/// llama.cpp's pre-tokenizer for `pre`, or `None` when glim does not know it.
fn pre_tokenizer_spec(pre: &str) -> Option<PreTokenizerSpec> {
    Some(match pre {
        "default" => spec(&[
            r"[\p{P}\$\+<=>\^~\|]+",
            RE_GPT2,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreTokenizerSpec {
            regexes: &[RE_LLAMA3],
            ignore_merges: true,
            add_bos: true,
        },
        "dbrx" | "smaug-bpe" | "glm4" | "chatglm-bpe" => spec(&[RE_LLAMA3]),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" => spec(&[RE_GPT2]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => spec(&[r"\p{N}", RE_GPT2]),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => spec(&[RE_QWEN2]),
        "qwen35" => spec(&[RE_QWEN35]),
        "falcon" => spec(&[r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"]),
        "deepseek-coder" => spec(&[
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            // llama.cpp matches regexes without Unicode classes against text whose non-ASCII
            // whitespace became \v, so the spaces inside U+0800..U+4E00 never match here.
            r"[一-龥ࠀ-一가-퟿--\s]+",
            r"\p{N}",
        ]),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => {
            spec(&[r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", RE_DEEPSEEK3])
        }
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => spec(&[RE_GPT4O]),
        "tekken" => PreTokenizerSpec {
            regexes: &[RE_TEKKEN],
            ignore_merges: true,
            add_bos: true,
        },
        "seed-coder" => spec(&[RE_SEED_CODER]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => spec(&[RE_BAILINGMOE]),
        "poro-chat" | "bloom" | "gpt3-finnish" => spec(&[RE_BLOOM]),
        "viking" => spec(&[RE_BLOOM, r"\p{N}"]),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------
// Token bytes: what each id decodes to.
// ---------------------------------------------------------------------------------------

/// GPT-2's byte → printable character table (`bytes_to_unicode`): printable Latin-1 bytes
/// stand for themselves, the other 68 bytes for U+0100 onwards, in order.
fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let cp = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

/// The inverse of [`byte_level_chars`].
fn byte_level_decoder() -> HashMap<char, u8> {
    byte_level_chars()
        .iter()
        .enumerate()
        .map(|(b, &c)| (c, b as u8))
        .collect()
}

/// The bytes of a byte-level BPE token: each stand-in character back to its byte. A token
/// with any other character (an added token like `<|im_start|>` is usually printable ASCII
/// and maps to itself) is taken as its UTF-8, as `tokenizers`' ByteLevel decoder does.
fn byte_level_bytes(token: &str, map: &HashMap<char, u8>) -> Vec<u8> {
    token
        .chars()
        .map(|c| map.get(&c).copied())
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_else(|| token.as_bytes().to_vec())
}

/// The byte of a SentencePiece byte token `<0xNN>`.
fn spm_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The text of a SentencePiece token: `▁` is a space.
fn spm_bytes(token: &str) -> Vec<u8> {
    token.replace(SPM_SPACE, " ").into_bytes()
}

/// What every token id decodes to, flattened; shared by a tokenizer and its stream decoders.
struct TokenTable {
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]` is token `id`'s slice of `bytes`.
    offsets: Vec<usize>,
    /// Drop one space at the very start of the output: SentencePiece models add one when
    /// encoding (`add_space_prefix`), and both llama.cpp and `tokenizers` take it back off.
    strip_leading_space: bool,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.len())
            .field("bytes", &self.bytes.len())
            .field("strip_leading_space", &self.strip_leading_space)
            .finish()
    }
}

impl TokenTable {
    fn new(pieces: impl Iterator<Item = Vec<u8>>, strip_leading_space: bool) -> Self {
        let mut bytes = Vec::new();
        let mut offsets = vec![0];
        for piece in pieces {
            bytes.extend_from_slice(&piece);
            offsets.push(bytes.len());
        }
        Self {
            bytes,
            offsets,
            strip_leading_space,
        }
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let i = usize::try_from(id).ok()?;
        let (&start, &end) = (self.offsets.get(i)?, self.offsets.get(i + 1)?);
        self.bytes.get(start..end)
    }
}

/// How a `tokenizer.json`'s decoder turns tokens into text, as far as glim's byte-based
/// decoding needs to know.
enum DecoderKind {
    /// GPT-2 byte-level BPE.
    ByteLevel,
    /// SentencePiece style: `▁` for spaces, `<0xNN>` byte tokens when `byte_fallback`.
    SentencePiece {
        byte_fallback: bool,
        strip_leading_space: bool,
    },
    /// Anything else (WordPiece, ...): decoded token by token through `tokenizers`.
    Other,
}

impl DecoderKind {
    /// Reads the kind from the decoder's serialized form, which names every part by its
    /// `type` (the enum itself hides the inner settings).
    fn of(decoder: Option<&DecoderWrapper>) -> Self {
        let Some(json) = decoder.and_then(|d| serde_json::to_value(d).ok()) else {
            return DecoderKind::Other;
        };
        let parts: Vec<serde_json::Value> = match json.get("type").and_then(|t| t.as_str()) {
            Some("Sequence") => json
                .get("decoders")
                .and_then(|d| d.as_array())
                .cloned()
                .unwrap_or_default(),
            _ => vec![json],
        };
        fn ty(p: &serde_json::Value) -> &str {
            p.get("type").and_then(|t| t.as_str()).unwrap_or("")
        }
        if parts.iter().any(|p| ty(p) == "ByteLevel") {
            return DecoderKind::ByteLevel;
        }
        let mut spm = false;
        let mut byte_fallback = false;
        let mut strip_leading_space = false;
        for p in &parts {
            match ty(p) {
                "Replace" => {
                    let from = p.pointer("/pattern/String").and_then(|s| s.as_str());
                    let to = p.get("content").and_then(|s| s.as_str());
                    if from != Some(SPM_SPACE) || to != Some(" ") {
                        return DecoderKind::Other;
                    }
                    spm = true;
                }
                "Metaspace" => {
                    if p.get("replacement").and_then(|r| r.as_str()) != Some(SPM_SPACE) {
                        return DecoderKind::Other;
                    }
                    spm = true;
                    let scheme = p.get("prepend_scheme").and_then(|s| s.as_str());
                    let legacy = p.get("add_prefix_space").and_then(|s| s.as_bool());
                    strip_leading_space |= scheme.map_or(legacy != Some(false), |s| s != "never");
                }
                "ByteFallback" => byte_fallback = true,
                "Fuse" => {}
                "Strip" => {
                    let content = p.get("content").and_then(|c| c.as_str());
                    let start = p.get("start").and_then(|s| s.as_u64()).unwrap_or(0);
                    let stop = p.get("stop").and_then(|s| s.as_u64()).unwrap_or(0);
                    if content != Some(" ") || start > 1 || stop != 0 {
                        return DecoderKind::Other;
                    }
                    strip_leading_space |= start == 1;
                }
                _ => return DecoderKind::Other,
            }
        }
        if spm || byte_fallback {
            DecoderKind::SentencePiece {
                byte_fallback,
                strip_leading_space,
            }
        } else {
            DecoderKind::Other
        }
    }
}

// ---------------------------------------------------------------------------------------
// The tokenizer.
// ---------------------------------------------------------------------------------------

/// A tokenizer: encodes text to token ids and decodes them back, and knows the model's
/// special tokens (BOS, EOS and every end-of-generation token) and its chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    table: Arc<TokenTable>,
    /// Decode through `inner` rather than the table (tokenizers of an unknown kind).
    decode_with_inner: bool,
    /// glim adds BOS/EOS itself (GGUF vocabularies); otherwise `inner`'s post-processor does.
    manual_specials: bool,
    add_bos: bool,
    add_eos: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    /// Sorted, deduplicated end-of-generation ids (EOS, EOT, EOM and the known turn ends).
    eog: Vec<u32>,
    chat_template: Option<String>,
    /// llguidance's index of this vocabulary, built on first use (see `crate::grammar`).
    grammar: GrammarCache,
}

type GrammarCache = Arc<OnceLock<std::result::Result<Arc<ParserFactory>, String>>>;

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eog", &self.eog)
            .field("add_bos", &self.add_bos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// A GGUF vocabulary, read and checked.
struct GgufVocab<'a> {
    tokens: Vec<String>,
    types: Option<&'a [i32]>,
    scores: Option<&'a [f32]>,
}

impl GgufVocab<'_> {
    fn ty(&self, id: usize) -> i32 {
        self.types.map_or(token_type::NORMAL, |t| t[id])
    }

    fn score(&self, id: usize) -> f32 {
        self.scores.map_or(0.0, |s| s[id])
    }
}

/// `key` as a u32, `None` when absent.
fn opt_u32(g: &GgufHeader, key: &str) -> Result<Option<u32>> {
    g.metadata(key).map(|_| g.get_u32(key)).transpose()
}

fn opt_bool(g: &GgufHeader, key: &str) -> Result<Option<bool>> {
    g.metadata(key).map(|_| g.get_bool(key)).transpose()
}

fn tk_err(what: &str) -> impl FnOnce(tokenizers::Error) -> Error + '_ {
    move |e| Error::Invalid(format!("{what}: {e}"))
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF file describes (`tokenizer.ggml.*`), with its chat
    /// template (`tokenizer.chat_template`) when it has one. Ids match llama.cpp's for the
    /// same file; see the module docs.
    pub fn from_gguf(g: &GgufHeader) -> Result<Self> {
        if g.metadata("tokenizer.ggml.tokens").is_none() {
            return Err(Error::Invalid(
                "GGUF file has no tokenizer: tokenizer.ggml.tokens is missing".into(),
            ));
        }
        let model = match g.metadata("tokenizer.ggml.model") {
            None => {
                return Err(Error::Invalid(
                    "GGUF file has no tokenizer: tokenizer.ggml.model is missing".into(),
                ))
            }
            Some(_) => g.get_str("tokenizer.ggml.model")?,
        };
        let spm = match model {
            "gpt2" => false,
            "llama" => true,
            "no_vocab" | "none" => {
                return Err(Error::Invalid(format!(
                    "GGUF file has no tokenizer (tokenizer.ggml.model = {model:?})"
                )))
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "tokenizer model {other:?} (tokenizer.ggml.model); glim reads \"gpt2\" \
                     (byte-level BPE) and \"llama\" (SentencePiece) vocabularies"
                )))
            }
        };

        let vocab = read_vocab(g, spm)?;
        let n = vocab.tokens.len();
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, t) in vocab.tokens.iter().enumerate() {
            // As in llama.cpp, a text listed twice encodes to its later id; both decode.
            if let Some(prev) = ids.insert(t, i as u32) {
                log::warn!("GGUF vocabulary has the token {t:?} twice (ids {prev} and {i})");
            }
        }

        // Special ids: llama.cpp's defaults per model type, then the file's keys.
        let in_range = |key: &str, id: Option<u32>| -> Option<u32> {
            match id {
                Some(id) if (id as usize) < n => Some(id),
                Some(id) => {
                    log::warn!("{key} = {id} is outside the {n}-token vocabulary; ignored");
                    None
                }
                None => None,
            }
        };
        let (def_bos, def_eos, def_unk) = if spm {
            (Some(1), Some(2), Some(0))
        } else {
            (None, None, None)
        };
        let special = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            Ok(in_range(key, opt_u32(g, key)?).or(in_range(key, default)))
        };
        let mut bos = special("tokenizer.ggml.bos_token_id", def_bos)?;
        let eos = special("tokenizer.ggml.eos_token_id", def_eos)?;
        let unk = special("tokenizer.ggml.unknown_token_id", def_unk)?;
        let pad = special("tokenizer.ggml.padding_token_id", None)?;
        let eot = special("tokenizer.ggml.eot_token_id", None)?;
        let eom = special("tokenizer.ggml.eom_token_id", None)?;

        // Which tokens are split out of the text as single ids.
        let is_eog_text = |t: &str| END_OF_GENERATION_TEXTS.contains(&t);
        let is_special = |i: usize| {
            matches!(
                vocab.ty(i),
                token_type::CONTROL | token_type::UNKNOWN | token_type::USER_DEFINED
            ) || is_eog_text(&vocab.tokens[i])
        };

        let (mut inner, add_bos_default) = if spm {
            (build_spm(g, &vocab, &ids, unk)?, true)
        } else {
            build_bpe(g, &vocab)?
        };
        // llama.cpp's GLM-4 pre-tokenizer has no BOS token.
        let pre = g.metadata("tokenizer.ggml.pre").and_then(|v| v.as_str());
        if !spm && matches!(pre, Some("glm4" | "chatglm-bpe")) {
            bos = None;
        }
        if let Some(i) =
            (0..n).find(|&i| is_special(i) && vocab.tokens[i].len() > MAX_ADDED_TOKEN_BYTES)
        {
            return Err(Error::Invalid(format!(
                "tokenizer.ggml.tokens: added token {i} is {} bytes long (glim takes up to {MAX_ADDED_TOKEN_BYTES})",
                vocab.tokens[i].len()
            )));
        }
        let added: Vec<AddedToken> = (0..n)
            .filter(|&i| is_special(i))
            .map(|i| {
                let user =
                    vocab.ty(i) == token_type::USER_DEFINED && !is_eog_text(&vocab.tokens[i]);
                AddedToken::from(vocab.tokens[i].clone(), !user).normalized(false)
            })
            .collect();
        inner.add_special_tokens(&added);

        let add_bos = opt_bool(g, "tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default);
        let add_eos = opt_bool(g, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        if add_bos && bos.is_none() {
            log::warn!("the GGUF tokenizer asks for a BOS token but names none; none is added");
        }

        // End of generation: EOS, EOT, EOM and every token llama.cpp recognizes by its text.
        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        eog.extend(
            vocab
                .tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| is_eog_text(t))
                .map(|(i, _)| i as u32),
        );
        eog.sort_unstable();
        eog.dedup();

        // What each id decodes to, as llama.cpp's `token_to_piece` with `special = true`.
        let add_space_prefix =
            spm && opt_bool(g, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let byte_map = byte_level_decoder();
        let pieces = vocab.tokens.iter().enumerate().map(|(i, t)| {
            let ty = vocab.ty(i);
            if is_special(i) {
                t.as_bytes().to_vec()
            } else if spm {
                match ty {
                    token_type::BYTE => spm_byte(t).map(|b| vec![b]).unwrap_or_default(),
                    token_type::NORMAL => spm_bytes(t),
                    _ => Vec::new(),
                }
            } else if ty == token_type::NORMAL {
                byte_level_bytes(t, &byte_map)
            } else {
                Vec::new()
            }
        });
        let table = TokenTable::new(pieces, add_space_prefix);

        let chat_template = g
            .metadata("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_owned);

        Ok(Self {
            inner,
            table: Arc::new(table),
            decode_with_inner: false,
            manual_specials: true,
            add_bos: add_bos && bos.is_some(),
            add_eos: add_eos && eos.is_some(),
            bos,
            eos,
            unk,
            pad,
            eog,
            chat_template,
            grammar: GrammarCache::default(),
        })
    }

    /// Loads a Hugging Face `tokenizer.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = crate::formats::files::read_json_file(path)?;
        Self::from_json_bytes(&bytes).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses the contents of a Hugging Face `tokenizer.json`. BOS and EOS are guessed from
    /// the usual token names until [`Tokenizer::with_config_json`] says otherwise.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("tokenizer.json is not valid JSON: {e}")))?;
        check_tokenizer_json(&json)?;
        // Building it and reading its tokens back both run `tokenizers` on the file's
        // settings: a panic there is the file's error.
        guarded("reading tokenizer.json", || Self::from_checked_json(json))
    }

    /// [`Tokenizer::from_json_bytes`] once the file, parsed once, has passed
    /// [`check_tokenizer_json`].
    fn from_checked_json(json: serde_json::Value) -> Result<Self> {
        let inner: tokenizers::Tokenizer = serde_json::from_value(json)
            .map_err(|e| Error::Invalid(format!("tokenizer.json: {e}")))?;
        let vocab = inner.get_vocab(true);
        let n = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        // Ids index a table: a stray huge id must not allocate gigabytes.
        if n > 2 * vocab.len() + 1024 {
            return Err(Error::Invalid(format!(
                "tokenizer.json: token id {} with only {} tokens",
                n - 1,
                vocab.len()
            )));
        }
        let mut texts = vec![String::new(); n];
        for (t, &id) in &vocab {
            texts[id as usize] = t.clone();
        }

        let (pieces, strip): (Vec<Vec<u8>>, bool) = match DecoderKind::of(inner.get_decoder()) {
            DecoderKind::ByteLevel => {
                let map = byte_level_decoder();
                (
                    texts.iter().map(|t| byte_level_bytes(t, &map)).collect(),
                    false,
                )
            }
            DecoderKind::SentencePiece {
                byte_fallback,
                strip_leading_space,
            } => (
                texts
                    .iter()
                    .map(|t| match spm_byte(t).filter(|_| byte_fallback) {
                        Some(b) => vec![b],
                        None => spm_bytes(t),
                    })
                    .collect(),
                strip_leading_space,
            ),
            DecoderKind::Other => {
                let pieces = (0..n as u32)
                    .map(|id| inner.decode(&[id], false).map(String::into_bytes))
                    .collect::<tokenizers::Result<Vec<_>>>()
                    .map_err(tk_err("tokenizer.json"))?;
                let mut t = Self::assemble(inner, TokenTable::new(pieces.into_iter(), false));
                t.decode_with_inner = true;
                return Ok(t);
            }
        };
        Ok(Self::assemble(
            inner,
            TokenTable::new(pieces.into_iter(), strip),
        ))
    }

    /// A tokenizer from `tokenizer.json`, with special tokens found by their usual names.
    fn assemble(inner: tokenizers::Tokenizer, table: TokenTable) -> Self {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let bos = find(&["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"]);
        let eos = find(&["</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"]);
        let unk = find(&["<unk>", "[UNK]", "<|unk|>"]);
        let pad = find(&["<pad>", "[PAD]", "<|pad|>"]);
        let mut t = Self {
            inner,
            table: Arc::new(table),
            decode_with_inner: false,
            manual_specials: false,
            add_bos: false,
            add_eos: false,
            bos,
            eos,
            unk,
            pad,
            eog: Vec::new(),
            chat_template: None,
            grammar: GrammarCache::default(),
        };
        t.refresh_derived();
        t
    }

    /// Recomputes the end-of-generation set and whether encoding adds BOS/EOS (for a
    /// `tokenizer.json`, its post-processor decides that) after the special ids changed.
    fn refresh_derived(&mut self) {
        let mut eog: Vec<u32> = self.eos.into_iter().collect();
        eog.extend(
            END_OF_GENERATION_TEXTS
                .iter()
                .filter_map(|t| self.inner.token_to_id(t)),
        );
        eog.sort_unstable();
        eog.dedup();
        self.eog = eog;
        if !self.manual_specials {
            let probe = self
                .inner
                .encode_fast("a", true)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default();
            self.add_bos = self.bos.is_some() && probe.first() == self.bos.as_ref();
            self.add_eos =
                self.eos.is_some() && probe.len() > 1 && probe.last() == self.eos.as_ref();
        }
    }

    /// Applies a Hugging Face `tokenizer_config.json`: its `bos_token`, `eos_token`,
    /// `unk_token` and `pad_token` (a string or an object with `content`) and its
    /// `chat_template` (a string, or a list of named templates of which `default` or else
    /// the first is taken). Tokens it names that are not in the vocabulary are ignored.
    pub fn with_config_json(mut self, bytes: &[u8]) -> Result<Self> {
        let config: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("tokenizer_config.json: {e}")))?;
        if !config.is_object() {
            return Err(Error::Invalid(
                "tokenizer_config.json: expected a JSON object".into(),
            ));
        }
        let token = |key: &str| -> Option<u32> {
            let v = config.get(key)?;
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            let id = self.inner.token_to_id(text);
            if id.is_none() {
                log::warn!("tokenizer_config.json: {key} {text:?} is not in the vocabulary");
            }
            id
        };
        let (bos, eos, unk, pad) = (
            token("bos_token"),
            token("eos_token"),
            token("unk_token"),
            token("pad_token"),
        );
        self.bos = bos.or(self.bos);
        self.eos = eos.or(self.eos);
        self.unk = unk.or(self.unk);
        self.pad = pad.or(self.pad);
        match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => self.chat_template = Some(s.clone()),
            Some(serde_json::Value::Array(list)) => {
                let named = |name: &serde_json::Value| {
                    list.iter()
                        .find(|t| name.is_null() || t.get("name") == Some(name))
                        .and_then(|t| t.get("template")?.as_str())
                };
                if let Some(s) =
                    named(&"default".into()).or_else(|| named(&serde_json::Value::Null))
                {
                    self.chat_template = Some(s.to_owned());
                }
            }
            _ => {}
        }
        self.refresh_derived();
        self.grammar = GrammarCache::default();
        Ok(self)
    }

    /// Token ids for `text`. Special-token text (`<|im_start|>`) becomes its single id.
    /// With `add_special`, adds the BOS (and EOS) token when the model wants one (see
    /// [`Tokenizer::add_bos`]); a chat template that writes `bos_token` itself wants
    /// `add_special = false`.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = guarded("tokenizing", || {
            self.inner
                .encode_fast(text, add_special && !self.manual_specials)
                .map_err(tk_err("tokenizing failed"))
        })?;
        let ids = enc.get_ids();
        if !(add_special && self.manual_specials) {
            return Ok(ids.to_vec());
        }
        let mut out = Vec::with_capacity(ids.len() + 2);
        out.extend(self.bos.filter(|_| self.add_bos));
        out.extend_from_slice(ids);
        out.extend(self.eos.filter(|_| self.add_eos));
        Ok(out)
    }

    /// Token ids for a prompt: `text` as is (special-token text becomes its id), with the
    /// BOS token in front when the model wants one and the text (say, a chat template that
    /// writes `bos_token` itself) does not already start with it. Never adds EOS. Every
    /// front end encodes prompts with this, so they all feed the model the same ids.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, false)?;
        if let Some(bos) = self.bos.filter(|_| self.add_bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included. Bytes that do not form UTF-8 become
    /// U+FFFD. `Error::Invalid` for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if self.decode_with_inner {
            self.check_ids(ids)?;
            return guarded("decoding", || {
                self.inner
                    .decode(ids, false)
                    .map_err(tk_err("decoding failed"))
            });
        }
        let mut stream = self.stream_decoder();
        let mut text = String::new();
        for &id in ids {
            text.push_str(&stream.push(id)?);
        }
        text.push_str(&stream.finish());
        Ok(text)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| self.table.get(id).is_none()) {
            Some(id) => Err(out_of_range(*id, self.vocab_size())),
            None => Ok(()),
        }
    }

    /// A decoder for generated tokens, fed one id at a time; see [`StreamDecoder`].
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder {
            table: Arc::clone(&self.table),
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// A decoder for tokens that continue a text, such as a model's answer after its
    /// prompt: unlike [`Tokenizer::stream_decoder`], it keeps a SentencePiece token's leading
    /// space (" Paris" after "France is"), as llama.cpp prints it.
    pub fn continuation_decoder(&self) -> StreamDecoder {
        StreamDecoder {
            at_start: false,
            ..self.stream_decoder()
        }
    }

    /// The raw bytes token `id` stands for (possibly part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.table.get(id)
    }

    /// The id of the token whose vocabulary entry is exactly `token` (e.g. `<|im_end|>`, or
    /// `Ġthe` in a byte-level vocabulary).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The vocabulary entry of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of token ids (one more than the largest).
    pub fn vocab_size(&self) -> usize {
        self.table.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The model's EOS token; generation should stop at any of [`Tokenizer::eos_ids`].
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Every id that ends generation: EOS, the end-of-turn token (`<|im_end|>`,
    /// `<|eot_id|>`, `<end_of_turn>`, ...), end-of-message; sorted.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(text, true)` starts with the BOS token.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The text of the BOS token, for chat templates' `bos_token`.
    pub fn bos_token(&self) -> Option<String> {
        self.bos.and_then(|id| self.id_to_token(id))
    }

    /// The text of the EOS token, for chat templates' `eos_token`.
    pub fn eos_token(&self) -> Option<String> {
        self.eos.and_then(|id| self.id_to_token(id))
    }

    /// The chat template the model ships (GGUF `tokenizer.chat_template`, or
    /// `tokenizer_config.json`'s `chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Also ends generation at `ids` (a model folder's `eos_token_id` list); ids outside the
    /// vocabulary are ignored.
    pub fn with_end_of_generation(mut self, ids: &[u32]) -> Self {
        let n = self.vocab_size();
        self.eog.extend(ids.iter().filter(|&&id| (id as usize) < n));
        self.eog.sort_unstable();
        self.eog.dedup();
        self.grammar = GrammarCache::default();
        self
    }

    /// llguidance's parser factory for this vocabulary, built on first use and shared by
    /// clones (indexing a vocabulary takes a while; each grammar then compiles against it).
    pub(crate) fn grammar_factory(&self) -> Result<Arc<ParserFactory>> {
        self.grammar
            .get_or_init(|| {
                // Without this cache, so the factory's copy does not keep itself alive.
                let detached = Self {
                    grammar: GrammarCache::default(),
                    ..self.clone()
                };
                crate::grammar::build_factory(&detached)
            })
            .clone()
            .map_err(Error::Unsupported)
    }

    /// The ids of special tokens (control tokens: the chat template's markers, BOS, EOS),
    /// sorted.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, token)| token.special)
            .map(|(&id, _)| id)
            .chain(self.eog.iter().copied())
            .chain(self.bos)
            .chain(self.eos)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Every id that ends generation, sorted.
    pub fn end_of_generation(&self) -> &[u32] {
        &self.eog
    }

    /// This tokenizer as Hugging Face files: the text of `tokenizer.json` and the object of
    /// `tokenizer_config.json` (special tokens, whether BOS/EOS are added, the chat template).
    /// Read back with [`Tokenizer::from_json_bytes`] and [`Tokenizer::with_config_json`], it
    /// encodes and decodes as this one does. A GGUF vocabulary's BOS/EOS, which glim adds
    /// itself, become the `tokenizer.json` post-processor that HF tools expect.
    pub fn to_hf_files(&self) -> Result<(String, serde_json::Value)> {
        let mut inner = self.inner.clone();
        if self.manual_specials && (self.add_bos || self.add_eos) {
            let text = |id: Option<u32>| id.and_then(|id| self.id_to_token(id).map(|t| (t, id)));
            let (bos, eos) = (
                text(self.bos).filter(|_| self.add_bos),
                text(self.eos).filter(|_| self.add_eos),
            );
            // One sequence: BOS, the text, EOS (those that are added), with a type id suffix.
            let text_of = |p: &Option<(String, u32)>| p.as_ref().map(|(t, _)| t.clone());
            let (bos_text, eos_text) = (text_of(&bos), text_of(&eos));
            let sequence = |text: &str, type_id: &str| {
                [bos_text.as_deref(), Some(text), eos_text.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(|piece| format!("{piece}{type_id}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let single = sequence("$A", "");
            let pair = format!("{} {}", sequence("$A", ""), sequence("$B", ":1"));
            let specials: Vec<(String, u32)> = bos.into_iter().chain(eos).collect();
            let processor = tokenizers::processors::template::TemplateProcessing::builder()
                .try_single(single.as_str())
                .and_then(|b| b.try_pair(pair.as_str()))
                .map_err(|e| Error::Invalid(format!("BOS/EOS template: {e}")))?
                .special_tokens(specials)
                .build()
                .map_err(|e| Error::Invalid(format!("BOS/EOS template: {e}")))?;
            inner.with_post_processor(Some(processor));
        }
        let json = inner
            .to_string(false)
            .map_err(tk_err("writing tokenizer.json"))?;
        let mut config = serde_json::json!({
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "clean_up_tokenization_spaces": false,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        let named = [
            ("bos_token", self.bos),
            ("eos_token", self.eos),
            ("unk_token", self.unk),
            ("pad_token", self.pad),
        ];
        for (key, id) in named {
            if let Some(text) = id.and_then(|id| self.id_to_token(id)) {
                config[key] = text.into();
            }
        }
        if let Some(template) = &self.chat_template {
            config["chat_template"] = template.clone().into();
        }
        Ok((json, config))
    }
}

fn out_of_range(id: u32, n: usize) -> Error {
    Error::Invalid(format!(
        "token id {id} is outside the vocabulary ({n} tokens)"
    ))
}

/// Reads and checks the GGUF token arrays. llama.cpp reads each token as a C string, so a
/// token ends at its first NUL; one left empty gets llama.cpp's `[EMPTY_i]` name.
fn read_vocab(g: &GgufHeader, spm: bool) -> Result<GgufVocab<'_>> {
    let raw = g.get_str_array("tokenizer.ggml.tokens")?;
    if raw.is_empty() {
        return Err(Error::Invalid(
            "GGUF file has no tokenizer: tokenizer.ggml.tokens is empty".into(),
        ));
    }
    if u32::try_from(raw.len()).is_err() {
        return Err(Error::Invalid(format!(
            "tokenizer.ggml.tokens has {} entries, too many",
            raw.len()
        )));
    }
    let tokens = raw
        .iter()
        .enumerate()
        .map(|(i, t)| match t.split('\0').next().unwrap_or_default() {
            "" => format!("[EMPTY_{i}]"),
            t => t.to_owned(),
        })
        .collect::<Vec<_>>();
    let n = tokens.len();
    let types = match g.metadata("tokenizer.ggml.token_type") {
        None => None,
        Some(_) => Some(g.get_i32_array("tokenizer.ggml.token_type")?),
    };
    let scores = match g.metadata("tokenizer.ggml.scores") {
        None => None,
        Some(_) => Some(g.get_f32_array("tokenizer.ggml.scores")?),
    };
    for (key, len) in [
        ("tokenizer.ggml.token_type", types.map(<[i32]>::len)),
        ("tokenizer.ggml.scores", scores.map(<[f32]>::len)),
    ] {
        if let Some(len) = len.filter(|&l| l < n) {
            return Err(Error::Invalid(format!(
                "{key} has {len} entries for {n} tokens"
            )));
        }
    }
    if spm && scores.is_none() {
        log::warn!("SentencePiece GGUF vocabulary without scores; merges will follow token order");
    }
    Ok(GgufVocab {
        tokens,
        types,
        scores,
    })
}

/// A byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`), and whether it adds BOS
/// by default.
fn build_bpe(g: &GgufHeader, vocab: &GgufVocab) -> Result<(tokenizers::Tokenizer, bool)> {
    let pre = match g.metadata("tokenizer.ggml.pre") {
        None => {
            log::warn!(
                "GGUF file has no tokenizer.ggml.pre; using llama.cpp's default pre-tokenizer"
            );
            "default"
        }
        Some(_) => g.get_str("tokenizer.ggml.pre")?,
    };
    let spec = pre_tokenizer_spec(pre).ok_or_else(|| {
        Error::Unsupported(format!(
            "pre-tokenizer {pre:?} (tokenizer.ggml.pre); glim knows: {}",
            SUPPORTED_PRE_TOKENIZERS.join(", ")
        ))
    })?;

    let merges_raw = match g.metadata("tokenizer.ggml.merges") {
        None => {
            return Err(Error::Invalid(
                "GGUF file has no tokenizer merges (tokenizer.ggml.merges is missing)".into(),
            ))
        }
        Some(_) => g.get_str_array("tokenizer.ggml.merges")?,
    };
    let vocab_map = token_ids(&vocab.tokens);
    // llama.cpp splits each merge at the first space after its first byte and keeps the
    // first rank of a repeated pair; `tokenizers` wants every part and result in the
    // vocabulary, so merges that cannot apply are left out.
    let mut seen = ahash::AHashSet::with_capacity(merges_raw.len());
    let mut merges = Vec::with_capacity(merges_raw.len());
    let mut skipped = 0usize;
    for m in merges_raw {
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            skipped += 1;
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        let joined = format!("{a}{b}");
        if !vocab_map.contains_key(a)
            || !vocab_map.contains_key(b)
            || !vocab_map.contains_key(&joined)
            || !seen.insert((a, b))
        {
            skipped += 1;
            continue;
        }
        merges.push((a.to_owned(), b.to_owned()));
    }
    if skipped > 0 {
        log::warn!("{skipped} BPE merges of the GGUF vocabulary cannot apply and were skipped");
    }
    let model = BPE::builder()
        .vocab_and_merges(vocab_map, merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(tk_err("GGUF BPE vocabulary"))?;

    let mut steps = Vec::with_capacity(spec.regexes.len() + 1);
    for re in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err("pre-tokenizer regex"))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));

    let mut inner = tokenizers::Tokenizer::new(model);
    inner
        .with_pre_tokenizer(Some(PreTokenizerSequence::new(steps)))
        .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    Ok((inner, spec.add_bos))
}

/// A SentencePiece tokenizer (`tokenizer.ggml.model = "llama"`) as a byte-fallback BPE; see
/// the module docs.
fn build_spm(
    g: &GgufHeader,
    vocab: &GgufVocab,
    ids: &HashMap<&str, u32>,
    unk: Option<u32>,
) -> Result<tokenizers::Tokenizer> {
    // Every split of every token into two tokens is a merge, ranked by the merged token's
    // score (highest first), then by id, then left to right.
    let mut merges: Vec<(f32, u32, &str, &str)> = Vec::new();
    for (i, t) in vocab.tokens.iter().enumerate() {
        if vocab.ty(i) == token_type::BYTE {
            continue;
        }
        for (pos, _) in t.char_indices().skip(1) {
            let (a, b) = t.split_at(pos);
            if ids.contains_key(a) && ids.contains_key(b) {
                merges.push((vocab.score(i), i as u32, a, b));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = merges
        .into_iter()
        .map(|(_, _, a, b)| (a.to_owned(), b.to_owned()))
        .collect::<Vec<_>>();
    let vocab_map = token_ids(&vocab.tokens);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab_map, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(vocab.tokens[unk as usize].clone());
    }
    let model = builder
        .build()
        .map_err(tk_err("GGUF SentencePiece vocabulary"))?;

    let add_space_prefix = opt_bool(g, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPM_SPACE.into()).into());
    }
    normalizers.push(
        Replace::new(" ", SPM_SPACE)
            .map_err(tk_err("SentencePiece normalizer"))?
            .into(),
    );
    let space = Replace::new(SPM_SPACE, " ").map_err(tk_err("SentencePiece decoder"))?;
    let mut decoders = vec![
        DecoderWrapper::Replace(space),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ];
    if add_space_prefix {
        decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }

    let mut inner = tokenizers::Tokenizer::new(model);
    inner
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

// ---------------------------------------------------------------------------------------
// Streaming decoding.
// ---------------------------------------------------------------------------------------

/// Turns generated token ids into text as they come. Each [`StreamDecoder::push`] returns
/// the text that became complete; bytes of a UTF-8 character split across tokens (byte-level
/// BPE, `<0xNN>` tokens) are held back until the character is whole, so the output is never
/// broken UTF-8 and concatenating all of it equals [`Tokenizer::decode`] of all the ids.
/// Bytes that can never form a character become U+FFFD, as soon as that is certain.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    table: Arc<TokenTable>,
    pending: Vec<u8>,
    at_start: bool,
}

impl StreamDecoder {
    /// Feeds one token id; returns the text now complete (often empty while a character is
    /// still being assembled). `Error::Invalid` for an id outside the vocabulary, which
    /// leaves the decoder as it was.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self
            .table
            .get(id)
            .ok_or_else(|| out_of_range(id, self.table.len()))?;
        let mut bytes = bytes;
        if self.at_start && !bytes.is_empty() {
            self.at_start = false;
            if self.table.strip_leading_space && bytes[0] == b' ' {
                bytes = &bytes[1..];
            }
        }
        self.pending.extend_from_slice(bytes);
        Ok(self.drain(false))
    }

    /// Ends the stream: returns whatever bytes are still held back, an unfinished character
    /// becoming U+FFFD. The decoder can then be fed a new stream.
    pub fn finish(&mut self) -> String {
        let text = self.drain(true);
        self.at_start = true;
        text
    }

    /// Whether bytes are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the longest valid UTF-8 prefix of `pending`, replacing invalid sequences; an
    /// incomplete sequence at the end stays unless `flush`.
    fn drain(&mut self, flush: bool) -> String {
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                        None if flush => {
                            out.push('\u{FFFD}');
                            self.pending.clear();
                            return out;
                        }
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }
}

/// Token text to id for `tokenizers`' models; a text listed twice maps to its later id,
/// as in llama.cpp.
fn token_ids(tokens: &[String]) -> ahash::AHashMap<String, u32> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// The longest added (special or user-defined) token glim takes: real ones are a few dozen
/// bytes, and `tokenizers` matches them in time quadratic in their length.
const MAX_ADDED_TOKEN_BYTES: usize = 1024;
/// How many times over a `tokenizer.json`'s normalizers may grow a text (a space becoming
/// `▁` grows it threefold in bytes).
const MAX_NORMALIZER_GROWTH: f64 = 64.0;

/// Refuses a `tokenizer.json` that `tokenizers` would panic on or spend unbounded time or
/// memory with: added tokens past [`MAX_ADDED_TOKEN_BYTES`], a `Replace` normalizer with an
/// empty pattern, and normalizers that together grow a text past [`MAX_NORMALIZER_GROWTH`].
fn check_tokenizer_json(json: &serde_json::Value) -> Result<()> {
    let bad = |m: String| Err(Error::Invalid(format!("tokenizer.json: {m}")));
    for token in json["added_tokens"].as_array().into_iter().flatten() {
        let len = token["content"].as_str().map_or(0, str::len);
        if len > MAX_ADDED_TOKEN_BYTES {
            return bad(format!(
                "an added token is {len} bytes long (glim takes up to {MAX_ADDED_TOKEN_BYTES})"
            ));
        }
    }
    let growth = normalizer_growth(&json["normalizer"], 0)?;
    if growth > MAX_NORMALIZER_GROWTH {
        return bad(format!(
            "the normalizers would grow a text {growth:.0}-fold (glim takes up to {MAX_NORMALIZER_GROWTH}-fold)"
        ));
    }
    Ok(())
}

/// How many times over `normalizer` may make a text longer, in bytes, at worst.
fn normalizer_growth(normalizer: &serde_json::Value, depth: usize) -> Result<f64> {
    let bad = |m: &str| Err(Error::Invalid(format!("tokenizer.json: {m}")));
    if depth > 8 {
        return bad("normalizers nest too deeply");
    }
    match normalizer["type"].as_str() {
        Some("Sequence") => {
            let list = normalizer["normalizers"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            if list.len() > 64 {
                return bad("a normalizer sequence of more than 64 steps");
            }
            list.iter()
                .try_fold(1.0, |g, n| Ok(g * normalizer_growth(n, depth + 1)?))
        }
        Some("Replace") => {
            let content = normalizer["content"].as_str().map_or(0, str::len) as f64;
            match &normalizer["pattern"] {
                serde_json::Value::Object(p) => match p.get("String").and_then(|s| s.as_str()) {
                    Some("") => bad("a Replace normalizer has an empty pattern"),
                    Some(s) => Ok((content / s.len() as f64).max(1.0)),
                    // A regex may match the empty string: one insertion per character.
                    None => Ok(1.0 + content),
                },
                _ => Ok(1.0 + content),
            }
        }
        // Unicode normalization and the rest change a text by a bounded amount.
        _ => Ok(1.0),
    }
}

/// Runs `work` inside `tokenizers`, turning a panic there into an error naming `what`.
fn guarded<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(Error::Invalid(format!(
            "{what} failed inside the tokenizers library (a malformed tokenizer)"
        )))
    })
}
