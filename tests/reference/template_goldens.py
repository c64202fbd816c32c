#!/usr/bin/env python3
"""Writes template_goldens.json: real models' chat templates (templates/*.jinja) rendered by
transformers' own `render_jinja_template` (what `tokenizer.apply_chat_template` runs) over a
set of conversations, for glim's test that its minijinja renders them to the same text
(`engine/src/text/tests.rs`). Where a template refuses a conversation (raise_exception),
the golden records the error; glim must refuse it too.

Run (pip install transformers jinja2; no PyTorch needed):
    python3 tests/reference/template_goldens.py
"""
import datetime
import json
import pathlib

import transformers
from transformers.utils import chat_template_utils
from transformers.utils.chat_template_utils import render_jinja_template

HERE = pathlib.Path(__file__).parent

# The BOS and EOS texts each model's tokenizer_config.json gives.
SPECIALS = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("", "<|im_end|>"),
    "Qwen-Qwen3-0.6B.jinja": ("", "<|im_end|>"),
    "microsoft-Phi-3.5-mini-instruct.jinja": ("<s>", "<|endoftext|>"),
    "google-gemma-3-it.jinja": ("<bos>", "<eos>"),
    "meta-llama-Llama-3.2-1B-Instruct.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja": ("<s>", "</s>"),
}

# Llama 3.2's and Mistral's templates write today's date (`strftime_now`): the goldens are
# rendered at this instant, and glim's test pins its clock to it.
NOW = datetime.datetime(2025, 3, 9, 12, 0, 0, tzinfo=datetime.timezone.utc)


class PinnedClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    ([m("user", "Hello")], True),
    ([m("system", "Be brief."), m("user", "What is 2+2?")], True),
    ([m("system", "Be brief."), m("user", "What is 2+2?"), m("assistant", "4"), m("user", "And 3+3?")], True),
    ([m("user", "Hi"), m("assistant", "Hello! How can I help?")], False),
    ([m("user", "  padded, with a newline \n")], True),
    ([m("user", "Grüße aus Köln 👋 — «quotes» and \"json\" {braces}")], True),
    # A reasoning model's earlier answer with its thinking (Qwen3 drops it from history).
    ([m("user", "Hi"), m("assistant", "<think>\nThe user greets me.\n</think>\n\nHello!"), m("user", "Bye")], True),
    # Roles that do not alternate: Gemma's template raises.
    ([m("user", "One"), m("user", "Two")], True),
]

# Function calling, for the templates that render tools themselves (`tool_call` in their
# source): the tools offered, an assistant turn calling two of them (arguments as the
# objects transformers passes), their results, and the next turn.
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                       "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
CALLS = {"role": "assistant", "content": "", "tool_calls": [
    {"id": "call_0000001", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}},
    {"id": "call_0000002", "type": "function", "function": {"name": "get_time", "arguments": {}}},
]}
ONE_CALL = {**CALLS, "tool_calls": CALLS["tool_calls"][:1]}
TOOL_CONVERSATIONS = [
    ([m("user", "Weather in Paris?")], True),
    ([m("system", "Be brief."), m("user", "Weather in Paris?")], True),
    ([m("user", "Weather and time in Paris?"), CALLS,
      {"role": "tool", "tool_call_id": "call_0000001", "content": "{\"temperature\": 21}"},
      {"role": "tool", "tool_call_id": "call_0000002", "content": "12:00"}], True),
    # One call (Llama 3.x's templates take no more), its result, and the next question.
    ([m("user", "Weather in Paris?"), ONE_CALL,
      {"role": "tool", "tool_call_id": "call_0000001", "content": "{\"temperature\": 21}"},
      m("assistant", "It is 21 degrees."), m("user", "Thanks!")], True),
]


def main():
    chat_template_utils.datetime = PinnedClock
    out = {"transformers": transformers.__version__, "clock": int(NOW.timestamp()), "templates": {}}
    for name, (bos, eos) in SPECIALS.items():
        source = (HERE / "templates" / name).read_text()
        cases = []
        tool_cases = [(c, g, TOOLS) for c, g in TOOL_CONVERSATIONS] if "tool_call" in source else []
        for messages, generation, tools in [(c, g, None) for c, g in CONVERSATIONS] + tool_cases:
            case = {"messages": messages, "add_generation_prompt": generation}
            if tools:
                case["tools"] = tools
            try:
                rendered = render_jinja_template(
                    conversations=[messages], chat_template=source, tools=tools,
                    add_generation_prompt=generation, bos_token=bos, eos_token=eos)
                case["rendered"] = rendered[0][0] if isinstance(rendered, tuple) else rendered[0]
            except Exception as e:  # the template's raise_exception
                case["error"] = str(e)
            cases.append(case)
        out["templates"][name] = {"bos_token": bos, "eos_token": eos, "cases": cases}
    path = HERE / "template_goldens.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}: {sum(len(t['cases']) for t in out['templates'].values())} renders")


if __name__ == "__main__":
    main()
