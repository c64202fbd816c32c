//! Tests of the text layer: tokenizers built from small GGUF vocabularies made here (byte-level
//! BPE and SentencePiece, the latter checked against a port of llama.cpp's algorithm), the
//! stream decoder, chat templates, and the real SmolLM2 vocabulary when it is on this machine.

use std::collections::HashMap;

use super::template::strftime;
use super::*;
use crate::api::CallFormat;
use crate::error::Error;
use crate::formats::gguf::GgufFile;

// ---------------------------------------------------------------------------------------
// A minimal GGUF writer: metadata only.
// ---------------------------------------------------------------------------------------

enum V {
    Str(String),
    U32(u32),
    Bool(bool),
    Strs(Vec<String>),
    F32s(Vec<f32>),
    I32s(Vec<i32>),
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

fn gguf(kvs: &[(&str, V)]) -> GgufFile {
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut b, k);
        match v {
            V::Str(s) => {
                b.extend(8u32.to_le_bytes());
                put_str(&mut b, s);
            }
            V::U32(x) => {
                b.extend(4u32.to_le_bytes());
                b.extend(x.to_le_bytes());
            }
            V::Bool(x) => {
                b.extend(7u32.to_le_bytes());
                b.push(u8::from(*x));
            }
            V::Strs(xs) => {
                b.extend(9u32.to_le_bytes());
                b.extend(8u32.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                for x in xs {
                    put_str(&mut b, x);
                }
            }
            V::F32s(xs) => {
                b.extend(9u32.to_le_bytes());
                b.extend(6u32.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                for x in xs {
                    b.extend(x.to_le_bytes());
                }
            }
            V::I32s(xs) => {
                b.extend(9u32.to_le_bytes());
                b.extend(5u32.to_le_bytes());
                b.extend((xs.len() as u64).to_le_bytes());
                for x in xs {
                    b.extend(x.to_le_bytes());
                }
            }
        }
    }
    GgufFile::from_bytes(b).unwrap()
}

fn strs(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// GPT-2's byte stand-ins, in byte order (as `tokenizers` and llama.cpp define them).
fn byte_chars() -> Vec<String> {
    let mut out = Vec::new();
    let mut next = 256u32;
    for b in 0u32..256 {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let cp = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        out.push(char::from_u32(cp).unwrap().to_string());
    }
    out
}

const BPE_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const BPE_MERGES: [&str; 10] = [
    "h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "1 2",
];

/// A byte-level BPE vocabulary: the 256 byte tokens, three control tokens, the merges'
/// results.
fn bpe_gguf(pre: &str) -> GgufFile {
    let mut tokens = byte_chars();
    tokens.extend(strs(&BPE_SPECIALS));
    for m in BPE_MERGES {
        tokens.push(m.replace(' ', ""));
    }
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if (256..259).contains(&i) { 3 } else { 1 })
        .collect();
    gguf(&[
        ("tokenizer.ggml.model", V::Str("gpt2".into())),
        ("tokenizer.ggml.pre", V::Str(pre.into())),
        ("tokenizer.ggml.tokens", V::Strs(tokens)),
        ("tokenizer.ggml.token_type", V::I32s(types)),
        ("tokenizer.ggml.merges", V::Strs(strs(&BPE_MERGES))),
        ("tokenizer.ggml.bos_token_id", V::U32(256)),
        ("tokenizer.ggml.eos_token_id", V::U32(256)),
    ])
}

fn bpe(pre: &str) -> Tokenizer {
    Tokenizer::from_gguf(&bpe_gguf(pre)).unwrap()
}

/// A GGUF vocabulary with a control token of 30 000 bytes is refused before `tokenizers`
/// indexes it (it matches added tokens in time quadratic in their length).
#[test]
fn a_giant_added_token_in_a_gguf_vocabulary_is_refused() {
    let mut tokens = byte_chars();
    tokens.extend(strs(&BPE_SPECIALS));
    tokens[257] = "<".repeat(30_000);
    for m in BPE_MERGES {
        tokens.push(m.replace(' ', ""));
    }
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if (256..259).contains(&i) { 3 } else { 1 })
        .collect();
    let g = gguf(&[
        ("tokenizer.ggml.model", V::Str("gpt2".into())),
        ("tokenizer.ggml.pre", V::Str("gpt-2".into())),
        ("tokenizer.ggml.tokens", V::Strs(tokens)),
        ("tokenizer.ggml.token_type", V::I32s(types)),
        ("tokenizer.ggml.merges", V::Strs(strs(&BPE_MERGES))),
    ]);
    let e = Tokenizer::from_gguf(&g).err().map(|e| e.to_string());
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("added token 257") && e.contains("30000 bytes")),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Byte-level BPE.
// ---------------------------------------------------------------------------------------

#[test]
fn byte_level_bpe_encodes_like_llama_cpp() {
    let t = bpe("gpt-2");
    assert_eq!(t.vocab_size(), 256 + 3 + BPE_MERGES.len());
    let id = |s: &str| t.token_to_id(s).unwrap();
    assert_eq!(
        t.encode("hello world", false).unwrap(),
        [id("hello"), id("Ġworld")]
    );
    // Special-token text is one id, and the text around it is tokenized on its own.
    assert_eq!(
        t.encode("<|im_start|>user\nhello<|im_end|>", false)
            .unwrap(),
        [
            id("<|im_start|>"),
            id("u"),
            id("s"),
            id("e"),
            id("r"),
            id("Ċ"),
            id("hello"),
            id("<|im_end|>")
        ]
    );
    // gpt-2 keeps digit runs together; smollm (like starcoder) splits every digit first.
    assert_eq!(t.encode("123", false).unwrap(), [id("12"), id("3")]);
    let s = bpe("smollm");
    assert_eq!(s.encode("123", false).unwrap(), [id("1"), id("2"), id("3")]);
    // No BOS unless the file asks for one.
    assert!(!t.add_bos());
    assert_eq!(t.encode("hello", true).unwrap(), [id("hello")]);
    assert_eq!(t.bos_id(), Some(256));
    assert_eq!(t.eos_ids(), [256, 257 + 1]);
    assert!(t.is_eos(258) && t.is_eos(256) && !t.is_eos(257));
}

#[test]
fn byte_level_round_trips() {
    let t = bpe("gpt-2");
    for text in [
        "hello world",
        "",
        " ",
        "  leading and trailing  ",
        "tabs\tand\nnew\n\nlines\r\n",
        "ünïcödé 日本語 中文 한국어 العربية",
        "emoji 😀🎉👍🏽 and a family 👨‍👩‍👧",
        "code: fn main() { println!(\"{}\", 1 + 2); }",
        "<|im_start|>user\nhi<|im_end|>\n",
        "1234567890 3.14159 -42",
    ] {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text, "{ids:?}");
    }
}

#[test]
fn stream_decoder_holds_split_characters() {
    let t = bpe("gpt-2");
    // 😀 is F0 9F 98 80: four byte tokens, none of them text on its own.
    let ids = t.encode("a😀b", false).unwrap();
    assert_eq!(ids.len(), 6, "{ids:?}");
    let mut s = t.stream_decoder();
    let out: Vec<String> = ids.iter().map(|&id| s.push(id).unwrap()).collect();
    assert_eq!(out, ["a", "", "", "", "😀", "b"]);
    assert!(!s.has_pending());
    assert_eq!(s.finish(), "");

    // A character cut off at the end comes out lossy from finish(), and only then.
    let mut s = t.stream_decoder();
    assert_eq!(s.push(ids[0]).unwrap(), "a");
    assert_eq!(s.push(ids[1]).unwrap(), "");
    assert_eq!(s.push(ids[2]).unwrap(), "");
    assert!(s.has_pending());
    assert_eq!(s.finish(), "\u{FFFD}");

    // Bytes that can never start a character are replaced at once, not held.
    let cont = t.token_to_id(&byte_chars()[0x80]).unwrap();
    let mut s = t.stream_decoder();
    assert_eq!(s.push(cont).unwrap(), "\u{FFFD}");
    // A broken sequence followed by ASCII: the ASCII is not swallowed.
    assert_eq!(s.push(ids[1]).unwrap(), "");
    assert_eq!(s.push(ids[5]).unwrap(), "\u{FFFD}b");

    // Out-of-range ids are errors, for the stream and for decode.
    let mut s = t.stream_decoder();
    assert!(matches!(s.push(1_000_000), Err(Error::Invalid(_))));
    assert!(matches!(t.decode(&[0, 1_000_000]), Err(Error::Invalid(_))));
}

#[test]
fn stream_equals_decode() {
    let t = bpe("gpt-2");
    let text = "naïve café — 日本 🎉 done";
    let ids = t.encode(text, false).unwrap();
    let mut s = t.stream_decoder();
    let mut streamed = String::new();
    for &id in &ids {
        let piece = s.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'));
        streamed.push_str(&piece);
    }
    streamed.push_str(&s.finish());
    assert_eq!(streamed, text);
    assert_eq!(t.decode(&ids).unwrap(), text);
}

#[test]
fn gguf_errors() {
    // No tokenizer at all.
    let g = gguf(&[("general.architecture", V::Str("llama".into()))]);
    match Tokenizer::from_gguf(&g) {
        Err(Error::Invalid(m)) => assert!(m.contains("has no tokenizer"), "{m}"),
        other => panic!("{other:?}"),
    }
    // An algorithm glim does not know is named.
    let g = gguf(&[
        ("tokenizer.ggml.model", V::Str("rwkv".into())),
        ("tokenizer.ggml.tokens", V::Strs(strs(&["a", "b"]))),
    ]);
    match Tokenizer::from_gguf(&g) {
        Err(Error::Unsupported(m)) => assert!(m.contains("\"rwkv\""), "{m}"),
        other => panic!("{other:?}"),
    }
    // So is an unknown pre-tokenizer.
    let g = gguf(&[
        ("tokenizer.ggml.model", V::Str("gpt2".into())),
        ("tokenizer.ggml.pre", V::Str("martian".into())),
        ("tokenizer.ggml.tokens", V::Strs(strs(&["a", "b"]))),
        ("tokenizer.ggml.merges", V::Strs(vec![])),
    ]);
    match Tokenizer::from_gguf(&g) {
        Err(Error::Unsupported(m)) => assert!(m.contains("\"martian\""), "{m}"),
        other => panic!("{other:?}"),
    }
    // Missing merges, wrong types, short arrays, duplicates: errors, not panics.
    for kvs in [
        vec![
            ("tokenizer.ggml.model", V::Str("gpt2".into())),
            ("tokenizer.ggml.tokens", V::Strs(strs(&["a"]))),
        ],
        vec![
            ("tokenizer.ggml.model", V::U32(3)),
            ("tokenizer.ggml.tokens", V::Strs(strs(&["a"]))),
        ],
        vec![
            ("tokenizer.ggml.model", V::Str("llama".into())),
            ("tokenizer.ggml.tokens", V::Strs(strs(&["a", "b"]))),
            ("tokenizer.ggml.scores", V::F32s(vec![0.0])),
        ],
        vec![
            ("tokenizer.ggml.model", V::Str("llama".into())),
            ("tokenizer.ggml.tokens", V::Strs(vec![])),
        ],
    ] {
        assert!(matches!(
            Tokenizer::from_gguf(&gguf(&kvs)),
            Err(Error::Invalid(_))
        ));
    }
    // Merges that cannot apply and out-of-range special ids are skipped, as llama.cpp does.
    let g = gguf(&[
        ("tokenizer.ggml.model", V::Str("gpt2".into())),
        ("tokenizer.ggml.pre", V::Str("gpt-2".into())),
        ("tokenizer.ggml.tokens", V::Strs(strs(&["a", "b", "ab"]))),
        (
            "tokenizer.ggml.merges",
            V::Strs(strs(&["a b", "x y", "nospace", "a b"])),
        ),
        ("tokenizer.ggml.eos_token_id", V::U32(99)),
    ]);
    let t = Tokenizer::from_gguf(&g).unwrap();
    assert_eq!(t.encode("abab", false).unwrap(), [2, 2]);
    assert_eq!(t.eos_id(), None);
    // llama.cpp reads tokens as C strings: a NUL ends one, and an empty one is renamed.
    let g = spm_gguf(&[("x\0y", -1.0), ("", -2.0)], vec![]);
    let t = Tokenizer::from_gguf(&g).unwrap();
    assert_eq!(t.id_to_token(259).as_deref(), Some("x"));
    assert_eq!(t.id_to_token(260).as_deref(), Some("[EMPTY_260]"));
}

#[test]
fn every_supported_pre_tokenizer_compiles() {
    for pre in SUPPORTED_PRE_TOKENIZERS {
        let t = Tokenizer::from_gguf(&bpe_gguf(pre)).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let text = "Hello world! It's 2024, isn't it?\n\n  日本語 🎉 x";
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text, "{pre}");
    }
}

// ---------------------------------------------------------------------------------------
// SentencePiece.
// ---------------------------------------------------------------------------------------

/// A SentencePiece vocabulary: `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `pieces`
/// with their scores.
fn spm_gguf(pieces: &[(&str, f32)], extra: Vec<(&str, V)>) -> GgufFile {
    let mut tokens = strs(&["<unk>", "<s>", "</s>"]);
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(*s);
    }
    let mut kvs = vec![
        ("tokenizer.ggml.model", V::Str("llama".into())),
        ("tokenizer.ggml.tokens", V::Strs(tokens)),
        ("tokenizer.ggml.scores", V::F32s(scores)),
        ("tokenizer.ggml.token_type", V::I32s(types)),
    ];
    kvs.extend(extra);
    gguf(&kvs)
}

const SPM_PIECES: &[(&str, f32)] = &[
    ("▁", -1.0),
    ("h", -2.0),
    ("e", -2.0),
    ("l", -2.0),
    ("o", -2.0),
    ("w", -2.0),
    ("r", -2.0),
    ("d", -2.0),
    ("he", -3.0),
    ("ll", -3.5),
    ("llo", -4.0),
    ("▁he", -5.0),
    ("▁hello", -6.0),
    ("or", -3.0),
    ("▁w", -4.0),
    ("▁wor", -5.0),
    ("ld", -3.0),
    ("▁world", -6.0),
];

#[test]
fn sentencepiece_encodes_like_llama_cpp() {
    let t = Tokenizer::from_gguf(&spm_gguf(SPM_PIECES, vec![])).unwrap();
    let id = |s: &str| t.token_to_id(s).unwrap();
    // A leading space is added; spaces are ▁.
    assert_eq!(
        t.encode("hello world", false).unwrap(),
        [id("▁hello"), id("▁world")]
    );
    // BOS by default for SentencePiece models.
    assert!(t.add_bos());
    assert_eq!(
        t.encode("hello", true).unwrap(),
        [1, id("▁hello")],
        "{:?}",
        t.encode("hello", true)
    );
    // Unknown characters become their UTF-8 bytes.
    let ids = t.encode("é", false).unwrap();
    assert_eq!(ids, [id("▁"), id("<0xC3>"), id("<0xA9>")]);
    // Text after a special token gets its own leading space, as in llama.cpp.
    assert_eq!(
        t.encode("<s>hello</s>world", false).unwrap(),
        [1, id("▁hello"), 2, id("▁world")]
    );
    assert_eq!(t.eos_ids(), [2]);
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.unk_id()),
        (Some(1), Some(2), Some(0))
    );

    // Decoding takes the added space back off, and byte tokens form characters.
    for text in ["hello world", "héllo wörld 😀", "  two spaces", "a\nb"] {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
    }
    assert_eq!(t.decode(&[1, id("▁hello")]).unwrap(), "<s> hello");

    // The stream decoder on an emoji spread over <0xNN> tokens.
    let ids = t.encode("😀!", false).unwrap();
    let mut s = t.stream_decoder();
    let out: Vec<String> = ids.iter().map(|&i| s.push(i).unwrap()).collect();
    assert_eq!(out.concat(), "😀!");
    assert_eq!(out.iter().filter(|p| p.contains('😀')).count(), 1);
    assert!(out.iter().all(|p| !p.contains('\u{FFFD}')));

    // add_space_prefix = false and add_bos_token = false are honoured.
    let t = Tokenizer::from_gguf(&spm_gguf(
        SPM_PIECES,
        vec![
            ("tokenizer.ggml.add_space_prefix", V::Bool(false)),
            ("tokenizer.ggml.add_bos_token", V::Bool(false)),
        ],
    ))
    .unwrap();
    assert_eq!(t.encode("hello", true).unwrap(), [id("he"), id("llo")]);
    assert_eq!(t.decode(&[id("▁hello")]).unwrap(), " hello");
}

/// llama.cpp's SentencePiece tokenizer (`llm_tokenizer_spm_session`), written plainly:
/// repeatedly merge the adjacent pair whose concatenation is the best-scoring token (leftmost
/// on ties); what is left and is no token becomes byte tokens.
fn llama_cpp_spm(
    text: &str,
    ids: &HashMap<String, u32>,
    scores: &HashMap<String, f32>,
) -> Vec<u32> {
    if text.is_empty() {
        return Vec::new();
    }
    let text = format!(" {text}").replace(' ', "▁");
    let mut syms: Vec<String> = text.chars().map(String::from).collect();
    loop {
        let mut best: Option<(usize, f32)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let joined = format!("{}{}", syms[i], syms[i + 1]);
            if let Some(&s) = scores.get(&joined) {
                if best.is_none_or(|(_, b)| s > b) {
                    best = Some((i, s));
                }
            }
        }
        let Some((i, _)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    let mut out = Vec::new();
    for s in syms {
        match ids.get(&s) {
            Some(&id) => out.push(id),
            None => out.extend(s.bytes().map(|b| ids[&format!("<0x{b:02X}>")])),
        }
    }
    out
}

#[test]
fn sentencepiece_matches_llama_cpp_on_random_vocabularies() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Pieces are made of characters that are pieces themselves, as SentencePiece's are; 'é'
    // is in none of them and falls back to bytes.
    let alphabet: Vec<char> = "▁abc".chars().collect();
    for round in 0..20 {
        // Every single character, then random strings with distinct scores.
        let mut pieces: Vec<(String, f32)> =
            alphabet.iter().map(|c| (c.to_string(), -1.0)).collect();
        let mut seen: std::collections::HashSet<String> =
            pieces.iter().map(|p| p.0.clone()).collect();
        while pieces.len() < 60 {
            let len = 2 + (next() % 5) as usize;
            let p: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if seen.insert(p.clone()) {
                let score = -((next() % 1_000_000) as f32) / 1000.0 - 2.0;
                pieces.push((p, score));
            }
        }
        let refs: Vec<(&str, f32)> = pieces.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let t = Tokenizer::from_gguf(&spm_gguf(&refs, vec![])).unwrap();
        let mut ids = HashMap::new();
        let mut scores = HashMap::new();
        for id in 0..t.vocab_size() as u32 {
            let tok = t.id_to_token(id).unwrap();
            ids.insert(tok.clone(), id);
            if id >= 259 {
                scores.insert(tok, pieces[id as usize - 259].1);
            }
        }
        for _ in 0..100 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| match next() % 6 {
                    0 => ' ',
                    1 => 'a',
                    2 => 'b',
                    3 => 'c',
                    4 => 'é',
                    _ => 'a',
                })
                .collect();
            let want = llama_cpp_spm(&text, &ids, &scores);
            let got = t.encode(&text, false).unwrap();
            assert_eq!(got, want, "round {round}, text {text:?}");
            assert_eq!(t.decode(&got).unwrap(), text);
        }
    }
}

// ---------------------------------------------------------------------------------------
// tokenizer.json and tokenizer_config.json.
// ---------------------------------------------------------------------------------------

#[test]
fn tokenizer_json_round_trip() {
    for (t, text) in [
        (bpe("smollm"), "<|im_start|>hello world 123 😀"),
        (
            Tokenizer::from_gguf(&spm_gguf(SPM_PIECES, vec![])).unwrap(),
            "hello world é😀",
        ),
    ] {
        let json = t.inner().to_string(false).unwrap();
        let j = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
        let ids = t.encode(text, false).unwrap();
        assert_eq!(j.encode(text, false).unwrap(), ids);
        assert_eq!(j.decode(&ids).unwrap(), text);
        assert_eq!(j.vocab_size(), t.vocab_size());
        let mut s = j.stream_decoder();
        let streamed: String = ids.iter().map(|&i| s.push(i).unwrap()).collect();
        assert_eq!(streamed + &s.finish(), text);
    }

    let t = bpe("gpt-2");
    let json = t.inner().to_string(false).unwrap();
    let j = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
    // Guessed from the names until the config says otherwise.
    assert_eq!(j.eos_id(), Some(256));
    assert_eq!(j.eos_ids(), [256, 258]);
    assert!(j.chat_template().is_none());
    let config = br#"{
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true},
        "pad_token": "<|not in vocab|>",
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    }"#;
    let j = j.with_config_json(config).unwrap();
    assert_eq!(
        (j.bos_id(), j.eos_id(), j.pad_id()),
        (Some(257), Some(258), None)
    );
    assert_eq!(j.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(j.chat_template(), Some("D"));
    assert!(!j.add_bos());
    assert!(matches!(
        j.clone().with_config_json(b"[1, 2]"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        Tokenizer::from_json_bytes(b"{not json"),
        Err(Error::Invalid(_))
    ));
    #[cfg(not(target_arch = "wasm32"))]
    assert!(matches!(
        Tokenizer::from_file("/nonexistent/tokenizer.json"),
        Err(Error::Invalid(_))
    ));
}

/// A `tokenizer.json` is input from a stranger: one that would panic inside `tokenizers`,
/// take quadratic time (a giant added token) or multiply text (a chain of growing
/// replacements) is refused with an error naming what is wrong; ordinary normalizers load.
#[test]
fn pathological_tokenizer_json_is_refused() {
    let json = bpe("smollm").inner().to_string(false).unwrap();
    let base: serde_json::Value = serde_json::from_str(&json).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = base.clone();
        edit(&mut v);
        Tokenizer::from_json_bytes(v.to_string().as_bytes())
    };
    let replace = |pattern: &str, content: &str| serde_json::json!({"type": "Replace", "pattern": {"String": pattern}, "content": content});
    let ok = with(&|v| v["normalizer"] = replace(" ", "\u{2581}")).unwrap();
    assert!(!ok.encode("hello world", false).unwrap().is_empty());
    for (what, edit) in [
        (
            "empty",
            Box::new(|v: &mut serde_json::Value| v["normalizer"] = replace("", "xx"))
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        (
            "grow",
            Box::new(|v: &mut serde_json::Value| {
                v["normalizer"] = serde_json::json!({"type": "Sequence",
                    "normalizers": vec![replace("a", "aaaa"); 12]})
            }),
        ),
        (
            "added token",
            Box::new(|v: &mut serde_json::Value| {
                v["added_tokens"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({
                    "id": 300, "content": "x".repeat(30_000), "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            }),
        ),
    ] {
        let e = with(&*edit).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains(what)),
            "{what}: {e:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Chat templates.
// ---------------------------------------------------------------------------------------

/// A system message and two user turns around an answer.
fn short_conversation() -> [Message; 4] {
    [
        Message::system("Be brief."),
        Message::user("Hi!"),
        Message::assistant("Hello."),
        Message::user("2+2?"),
    ]
}

#[test]
fn chatml_renders_a_conversation_exactly() {
    let t = ChatTemplate::chatml("", "<|im_end|>");
    assert!(t.is_fallback());
    let msgs = short_conversation();
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
         <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&msgs[1..2], false).unwrap(),
        "<|im_start|>user\nHi!<|im_end|>\n"
    );
    assert_eq!(t.render(&[], false).unwrap(), "");
}

#[test]
fn gemma_fallback_renders_gemma_turns() {
    let t = ChatTemplate::new(super::template::GEMMA_TEMPLATE, "<bos>", "<eos>").unwrap();
    let msgs = short_conversation();
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n\
         <start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\n2+2?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
}

#[test]
fn hf_template_dialect() {
    // A Llama-2-style template: bos/eos, raise_exception, loop controls, Python methods,
    // trim_blocks/lstrip_blocks.
    let src = r#"
{%- if messages[0]['role'] == 'system' %}
    {%- set system = messages[0]['content'].strip() %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system = '' %}
{%- endif %}
{%- for message in messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {{- bos_token + '[INST] ' }}
        {%- if loop.first and system %}{{ '<<SYS>>\n' + system + '\n<</SYS>>\n\n' }}{% endif %}
        {{- message['content'].strip() + ' [/INST]' }}
    {%- else %}
        {{- ' ' + message['content'].strip() + ' ' + eos_token }}
    {%- endif %}
    {%- if loop.index >= 3 %}{% break %}{% endif %}
{%- endfor %}
{%- if message is defined and 'x'.startswith('x') %}{% endif %}"#;
    let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    let out = t
        .render(
            &[
                Message::system("  Be kind.  "),
                Message::user(" Hi "),
                Message::assistant("Hello"),
                Message::user("Bye"),
                Message::assistant("never rendered"),
            ],
            false,
        )
        .unwrap();
    assert_eq!(
        out,
        "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]"
    );

    // raise_exception: an error carrying the template's message.
    match t.render(&[Message::assistant("first")], false) {
        Err(Error::Invalid(m)) => {
            assert!(m.contains("Conversation roles must alternate"), "{m}");
            assert!(m.contains("raised"), "{m}");
        }
        other => panic!("{other:?}"),
    }

    // tojson as transformers writes it; strftime_now exists natively.
    let t = ChatTemplate::new(
        r#"{{ {"b": [1, "é", none, true], "a": {}} | tojson }}|{{ {"k": [1, 2]} | tojson(indent=2) }}|{{ 'x' if strftime_now is defined else 'y' }}"#,
        "",
        "",
    )
    .unwrap();
    let expect_defined = if cfg!(target_arch = "wasm32") {
        "y"
    } else {
        "x"
    };
    assert_eq!(
        t.render(&[], false).unwrap(),
        format!("{{\"b\": [1, \"é\", null, true], \"a\": {{}}}}|{{\n  \"k\": [\n    1,\n    2\n  ]\n}}|{expect_defined}")
    );
}

#[test]
fn hf_template_features() {
    // Constructs from Llama 3, Gemma and Qwen templates: namespace, filters, tests, string
    // methods, loop controls, strftime_now with a fallback, dict literals through tojson.
    let src = r#"{{- bos_token }}
{%- if strftime_now is defined %}{% set date = strftime_now("%Y") %}{% else %}{% set date = "2024" %}{% endif %}
{%- set ns = namespace(n=0, sys='') %}
{%- for m in messages %}
    {%- if m.role == 'system' %}{% set ns.sys = m.content | trim %}{% continue %}{% endif %}
    {%- set ns.n = ns.n + 1 %}
    {%- set role = 'model' if m['role'] == 'assistant' else m['role'] %}
    {{- '<start_of_turn>' ~ role ~ '\n' ~ (m.content | trim) ~ '<end_of_turn>\n' }}
{%- endfor %}
{{- ns.n }}|{{ ns.sys.upper() }}|{{ date | length }}
|{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}
|{{ {'name': 'f', 'arguments': {'x': 1}} | tojson }}
|{{ 'a b c'.split() | length }}{{ 'Hello'.startswith('He') }}{{ 'x' is string }}{{ messages[-1].content.endswith('?') }}
|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }}{% if not loop.last %},{% endif %}{% endfor %}"#;
    let t = ChatTemplate::new(src, "<bos>", "<eos>").unwrap();
    let out = t
        .render(
            &[
                Message::system(" sys "),
                Message::user(" hi "),
                Message::assistant("yo"),
                Message::user("ok?"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nyo<end_of_turn>\n\
         <start_of_turn>user\nok?<end_of_turn>\n3|SYS|4\n| hi ,ok?\n\
         |{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n|3TrueTrueTrue\n|a=1,b=2"
    );
}

/// Templates are programs from the model file: one that loops for ever, recurses
/// exponentially or doubles a string stops at its budget with an error that blames the
/// template, and one that writes without end stops at the output cap.
#[test]
fn hostile_templates_stop_at_their_budget() {
    for (source, blamed) in [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "budget"),
        ("{% for i in range(1000) %}{% for j in range(1000) %}{% for k in range(1000) %}{% endfor %}{% endfor %}{% endfor %}", "budget"),
        ("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", "budget"),
        ("{% set s = namespace(v='x') %}{% for i in range(40) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v | length }}", "budget"),
        ("{{ 'x' * 1000000000 }}", "budget"),
        ("{% for i in range(100000) %}{% for j in range(100) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}", "budget"),
        ("{{ 'x' * 10000000 }}", "wrote more than"),
    ] {
        let t = ChatTemplate::new(source, "", "").unwrap();
        let e = t.render(&[Message::user("hi")], true).unwrap_err().to_string();
        assert!(
            e.contains("chat template") && e.contains(blamed) && e.contains("at fault"),
            "{source}: {e}"
        );
    }
}

/// A backslash-newline inside a tag's string literal continues the line, as in Jinja2
/// (Python's escapes); outside tags, and in comments, it is text as written.
#[test]
fn backslash_newline_continues_a_string_literal() {
    let src = "It's {{ \"one \\\ntwo\" + 'it\\'s' }} {# don't \\\n #}x\\\ny {{ '}}' }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "It's one twoit's x\\\ny }}");
}

#[test]
fn bad_templates_are_errors() {
    for src in [
        "{% for m in messages %}",
        "{{ 1 + }}",
        "{% endif %}",
        "{{ x | nosuchfilter }}",
    ] {
        match ChatTemplate::new(src, "", "") {
            Err(Error::Invalid(m)) => assert!(m.contains("chat template"), "{m}"),
            Ok(t) => assert!(
                matches!(
                    t.render(&[Message::user("a")], true),
                    Err(Error::Invalid(_))
                ),
                "{src}"
            ),
            Err(other) => panic!("{other:?}"),
        }
    }
    // Runtime failures are errors too.
    let t = ChatTemplate::new("{{ messages[0]['content'].nosuchmethod() }}", "", "").unwrap();
    assert!(matches!(
        t.render(&[Message::user("a")], false),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn strftime_formats_like_python() {
    // 2024-07-26 13:05:09 UTC, a Friday, day 208 of a leap year.
    let secs = 1_721_999_109;
    assert_eq!(strftime("%d %b %Y", secs), "26 Jul 2024");
    assert_eq!(
        strftime("%A %a %B %m/%-d/%y %H:%M:%S %I%p %j %%", secs),
        "Friday Fri July 07/26/24 13:05:09 01PM 208 %"
    );
    assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
    assert_eq!(strftime("%Y-%m-%d", 951_782_400), "2000-02-29");
    assert_eq!(strftime("%Y-%m-%d", -86_400), "1969-12-31");
    assert_eq!(strftime("%Q %", 0), "%Q %");
}

// ---------------------------------------------------------------------------------------
// The real SmolLM2-135M-Instruct vocabulary.
// ---------------------------------------------------------------------------------------

/// The SmolLM2 GGUF: `GLIM_TEST_GGUF`, the path the brief's machine has, or where
/// `scripts/fetch-model.sh` puts it.
#[cfg(not(target_arch = "wasm32"))]
fn smollm2() -> Option<GgufFile> {
    crate::test_model_file("SmolLM2 tokenizer test").map(|p| GgufFile::open(p).unwrap())
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn smollm2_tokenizer() {
    let Some(g) = smollm2() else { return };
    let t = Tokenizer::from_gguf(&g).unwrap();
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.encode("<|im_start|>", false).unwrap(), [1]);
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    assert_eq!((t.bos_id(), t.eos_id()), (Some(1), Some(2)));
    assert!(!t.add_bos());
    assert!(t.is_eos(2) && t.is_eos(0) && !t.is_eos(1));

    // Whole-word tokens of the vocabulary, as llama.cpp splits them.
    let vocab = g.get_str_array("tokenizer.ggml.tokens").unwrap();
    let pos = |w: &str| vocab.iter().position(|v| v == w).unwrap() as u32;
    assert_eq!(
        t.encode("The capital of France is", false).unwrap(),
        ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"].map(pos)
    );
    // smollm splits digits one by one.
    assert_eq!(
        t.encode("2024", false).unwrap(),
        ["2", "0", "2", "4"].map(pos)
    );

    for text in [
        "Hello, world!",
        "ünïcödé — «quotes» 日本語の文章 Ελληνικά русский",
        "emoji 😀🎉👍🏽👨‍👩‍👧 ✨",
        "whitespace   runs\t\tand\n\n\nnewlines \n \r\n",
        "\n\n",
        "  leading",
        "trailing  ",
        "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
        "def f(a, b=2):\n\treturn a ** b  # comment\n",
        "it's don't we'll I'M",
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        "3.14159e-10 1,000,000",
    ] {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text, "{ids:?}");
        let mut s = t.stream_decoder();
        let mut streamed = String::new();
        for &id in &ids {
            let piece = s.push(id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{text:?}");
            streamed.push_str(&piece);
        }
        assert_eq!(streamed + &s.finish(), text);
    }

    // The GGUF's own template.
    let tmpl = ChatTemplate::from_tokenizer(&t).unwrap();
    assert!(!tmpl.is_fallback());
    let prompt = tmpl.render(&[Message::user("What is 2+2?")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = t.encode(&prompt, false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 3);
    assert_eq!(t.decode(&ids).unwrap(), prompt);
    let same = ChatTemplate::from_tokenizer(&t).unwrap();
    assert_eq!(
        same.render(&[Message::user("What is 2+2?")], true).unwrap(),
        prompt
    );
}

/// The GGUF's own template as an MLC conv_template: MLC's ChatML shape with SmolLM2's
/// default system prompt, rendering as the template does.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn smollm2_template_derives_a_conv_template() {
    let Some(g) = smollm2() else { return };
    let t = Tokenizer::from_gguf(&g).unwrap();
    let tmpl = ChatTemplate::from_tokenizer(&t).unwrap();
    let conv = ConvTemplate::derive(&tmpl, "smollm2", vec![2]).unwrap();
    assert_eq!(
        conv.system_template,
        "<|im_start|>system\n{system_message}<|im_end|>\n"
    );
    assert_eq!(
        conv.system_message,
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    );
    assert_eq!(conv.seps, ["<|im_end|>\n"]);
    assert_eq!(conv.stop_str, ["<|im_end|>"]);
    let ours = ChatTemplate::new(conv.to_jinja(), tmpl.bos_token(), tmpl.eos_token()).unwrap();
    let msgs = [Message::user("What is 2+2?")];
    assert_eq!(
        ours.render(&msgs, true).unwrap(),
        tmpl.render(&msgs, true).unwrap()
    );
}

/// Token ids llama.cpp gives for the SmolLM2 GGUF, written by
/// `tests/reference/tokenizer_goldens.py`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn smollm2_matches_llama_cpp_goldens() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference/tokenizer_goldens.json");
    // Committed: its absence is a failure.
    let json = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (tests/reference/tokenizer_goldens.py writes it)",
            path.display()
        )
    });
    let Some(g) = smollm2() else { return };
    let t = Tokenizer::from_gguf(&g).unwrap();
    let cases: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let cases = cases.as_array().expect("a list of {text, ids}");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = t.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}: glim {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// llama.cpp accepts a vocabulary that lists a text twice (the later id encodes); so does glim.
#[test]
fn duplicate_vocabulary_texts_load_like_llama_cpp() {
    let mut pieces = SPM_PIECES.to_vec();
    pieces.push(("he", -9.0));
    let t = Tokenizer::from_gguf(&spm_gguf(&pieces, vec![])).unwrap();
    let last = (t.vocab_size() - 1) as u32;
    assert_eq!(t.token_to_id("he"), Some(last));
    assert_eq!(t.decode(&[last]).unwrap(), "he");
}

/// A GGUF vocabulary exported as Hugging Face files reads back as the same tokenizer: the
/// SentencePiece BOS that glim adds itself becomes tokenizer.json's post-processor, and the
/// byte-level BPE one (no BOS) stays without one.
#[test]
fn gguf_tokenizers_export_as_hf_files() {
    let spm = Tokenizer::from_gguf(&spm_gguf(SPM_PIECES, vec![])).unwrap();
    let bpe = bpe("smollm");
    for original in [spm, bpe] {
        let (json, config) = original.to_hf_files().unwrap();
        let back = Tokenizer::from_json_bytes(json.as_bytes())
            .unwrap()
            .with_config_json(config.to_string().as_bytes())
            .unwrap();
        assert_eq!(back.add_bos(), original.add_bos());
        assert_eq!(back.bos_id(), original.bos_id());
        assert_eq!(back.eos_id(), original.eos_id());
        for text in ["hello world", "hello", " héllo\nworld  ", ""] {
            for special in [true, false] {
                let ids = original.encode(text, special).unwrap();
                assert_eq!(
                    back.encode(text, special).unwrap(),
                    ids,
                    "{text:?} {special}"
                );
                assert_eq!(back.decode(&ids).unwrap(), original.decode(&ids).unwrap());
            }
        }
    }
}

/// A golden conversation's message, tool calls (arguments as objects, as transformers takes
/// them) and tool results included.
#[cfg(not(target_arch = "wasm32"))]
fn golden_message(m: &serde_json::Value) -> Message {
    let calls = m["tool_calls"].as_array().map_or(Vec::new(), |calls| {
        calls
            .iter()
            .map(|c| super::ToolCall {
                id: c["id"].as_str().unwrap().into(),
                name: c["function"]["name"].as_str().unwrap().into(),
                arguments: c["function"]["arguments"].to_string(),
            })
            .collect()
    });
    Message {
        tool_calls: calls,
        tool_call_id: m["tool_call_id"].as_str().map(str::to_string),
        ..Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
    }
}

/// Real models' chat templates (Qwen2.5, Qwen3, Phi-3.5, Gemma 3, Llama 3.2, Mistral Small
/// 3.1) render as transformers'
/// `apply_chat_template` renders them (with tools and function calls where the template
/// knows them), over conversations that reach their Python-style
/// parts (namespaces, reversed loops, string methods, `trim`, slicing, `raise_exception`);
/// and the Gemma fallback renders as Gemma 3's own template wherever that one accepts the
/// conversation. Goldens: `tests/reference/template_goldens.py`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn real_templates_render_as_transformers_does() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference");
    let goldens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("template_goldens.json")).unwrap()).unwrap();
    let templates = goldens["templates"].as_object().unwrap();
    assert_eq!(templates.len(), 6);
    let clock = goldens["clock"].as_i64().unwrap();
    // Real templates render far inside the budget a conversation of any size gets.
    let mut most_spent = 0;
    let gemma_fallback =
        ChatTemplate::new(super::template::GEMMA_TEMPLATE, "<bos>", "<eos>").unwrap();
    let mut failures = Vec::new();
    for (name, t) in templates {
        let source = std::fs::read_to_string(dir.join("templates").join(name)).unwrap();
        let text = |k: &str| t[k].as_str().unwrap().to_string();
        let template = ChatTemplate::new(source, text("bos_token"), text("eos_token"))
            .unwrap()
            .with_clock(clock);
        for case in t["cases"].as_array().unwrap() {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(golden_message)
                .collect();
            let generation = case["add_generation_prompt"].as_bool().unwrap();
            let tools = case.get("tools");
            if tools.is_some() {
                assert!(CallFormat::of(&template).is_some(), "{name}");
            }
            let got = template.render_spending(&messages, tools, generation);
            if let Ok((_, spent)) = &got {
                most_spent = most_spent.max(*spent);
            }
            let got = got.map(|(text, _)| text);
            match (&got, case["rendered"].as_str(), case["error"].as_str()) {
                (Ok(got), Some(want), _) if got == want => {}
                (Err(e), None, Some(want)) if e.to_string().contains(want) => {}
                _ => failures.push(format!(
                    "{name} {messages:?}: glim {got:?}, transformers {case}"
                )),
            }
            if name.starts_with("google-gemma-3") {
                if let Some(want) = case["rendered"].as_str() {
                    let fallback = gemma_fallback.render(&messages, generation).unwrap();
                    if fallback != want {
                        failures.push(format!(
                            "the Gemma fallback on {messages:?}: {fallback:?}, Gemma 3's {want:?}"
                        ));
                    }
                }
            }
        }
    }
    // A long conversation, too: the budget grows with it faster than templates spend.
    let long: Vec<Message> = (0..2000)
        .map(|i| match i % 2 {
            0 => Message::user(format!("Question {i}?")),
            _ => Message::assistant(format!("Answer {i}.")),
        })
        .collect();
    for name in templates.keys() {
        let source = std::fs::read_to_string(dir.join("templates").join(name)).unwrap();
        let template = ChatTemplate::new(source, "", "").unwrap();
        let input = long.iter().map(|m| m.content.len()).sum::<usize>();
        let limits = super::RenderLimits::for_input(input, long.len());
        let (_, spent) = template.render_spending(&long, None, true).unwrap();
        assert!(
            spent * 4 < limits.fuel,
            "{name}: {spent} of {}",
            limits.fuel
        );
    }
    let floor = super::RenderLimits::for_input(0, 0).fuel;
    assert!(
        most_spent * 10 < floor,
        "a real template spent {most_spent} of the {floor} fuel any render gets"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
