#!/usr/bin/env python3
"""Writes tokenizer_goldens.json: the token ids llama.cpp gives for tricky texts with the
SmolLM2-135M-Instruct GGUF vocabulary. glim's tokenizer test
(engine/src/text/tests.rs, `smollm2_matches_llama_cpp_goldens`) must produce the same ids.

Needs llama-cpp-python (`pip install llama-cpp-python`) and the model
(`scripts/fetch-model.sh` prints its path).

    python3 tests/reference/tokenizer_goldens.py [MODEL.gguf]

The ids are llama.cpp's `Llama(model, vocab_only=True).tokenize(text, add_bos=False,
special=True)`: special-token text such as <|im_start|> becomes its single id.
"""

import json
import os
import pathlib
import sys

from llama_cpp import Llama

HERE = pathlib.Path(__file__).resolve().parent

TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\n\n\n",
    "\t",
    " \n \r\n",
    "Hello, world!",
    "The capital of France is",
    " leading space",
    "trailing space ",
    "  two leading",
    "multiple   spaces   between",
    "tabs\tand\ttabs\t\t",
    "line one\nline two\n\nline four\n",
    "it's don't we'll I'M they've she'd you're",
    "2024 3.14159 1,000,000 -42 1e-10 0x1F",
    "1234567890123",
    "ünïcödé — «quotes» ‘single’ “double”",
    "日本語の文章です。中文句子。한국어 문장.",
    "Ελληνικά русский язык עברית العربية हिन्दी ไทย",
    "emoji 😀🎉👍🏽 ✨ family 👨‍👩‍👧 flag 🇫🇷",
    "combining e\u0301 and a\u0308 marks",
    "zero\u200bwidth and nbsp\u00a0here",
    "control \x01\x02 chars",
    "fn main() {\n    let x: Vec<u8> = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
    "def f(a, b=2):\n\treturn a ** b  # comment\n",
    "<div class=\"x\">&amp; <b>bold</b></div>",
    "SELECT * FROM t WHERE a >= 10 AND b != 'x';",
    "https://example.com/path?q=1&r=two#frag",
    "user@example.com +1 (555) 123-4567",
    "$100 €50 £20 ¥1000 ₹500",
    "!!!??? ... --- *** ___ ~~~ ```",
    "<|im_start|>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
    "text<|endoftext|>more text",
    "<|im_end|><|im_end|>",
    "<|im_start",
    "<repo_name>glim<file_sep>src/lib.rs\n",
    "CamelCaseIdentifier snake_case_identifier SCREAMING_CASE",
    "a" * 100,
    " " * 17 + "x",
    "\u3000ideographic space",
]


def main() -> None:
    if len(sys.argv) > 1:
        model = sys.argv[1]
    else:
        cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
        home = os.environ.get("GLIM_HOME", os.path.join(cache, "glim"))
        model = os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    cases = [
        {"text": text, "ids": llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)}
        for text in TEXTS
    ]
    out = HERE / "tokenizer_goldens.json"
    # One case per line, so a diff shows which texts changed.
    lines = ",\n".join(json.dumps(case, ensure_ascii=False) for case in cases)
    out.write_text(f"[\n{lines}\n]\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
