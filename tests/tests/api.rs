//! The OpenAI protocol layer (`api::ChatEngine`) on SmolLM2, as the browser package and the
//! server use it: response shapes, streaming, stops, limits, interrupts, and a lost device.

use std::sync::atomic::Ordering;

use glim::api::{ChatEngine, Request, ToolChoice, Tools, UnknownFields};
use glim::generate::Session;
use glim::grammar::Constraint;
use glim::model::graph::LoadOptions;
use glim::model::loader;
use glim::text::ChatTemplate;
use glim::Error;
use serde_json::{json, Value};

fn engine() -> Option<ChatEngine> {
    engine_with_context(256)
}

fn engine_with_context(context: usize) -> Option<ChatEngine> {
    engine_for(glim_tests::test_model()?, context)
}

fn engine_for(path: std::path::PathBuf, context: usize) -> Option<ChatEngine> {
    let ctx = glim_tests::open_gpu()?;
    let options = LoadOptions {
        context,
        ..LoadOptions::default()
    };
    let loaded = loader::load(&path, ctx, &options, &mut |_, _| {}).unwrap();
    Some(ChatEngine::new(
        Session::new(loaded.model, loaded.tokenizer),
        loaded.template,
        "smollm2",
    ))
}

fn chat(body: Value) -> Request {
    Request::chat(&body, UnknownFields::Reject).unwrap()
}

fn respond(engine: &mut ChatEngine, request: &Request) -> (Value, Vec<Value>) {
    let mut chunks = Vec::new();
    let response = pollster::block_on(engine.respond(request, &mut |c| chunks.push(c))).unwrap();
    (response, chunks)
}

/// The text of streamed chunks, put together.
fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}

#[test]
fn chat_engine_answers_as_openai_does() {
    let Some(mut engine) = engine() else { return };
    let question = json!([{ "role": "user", "content": "What is the capital of France?" }]);

    // Not streamed: one chat.completion with usage.
    let (response, chunks) = respond(
        &mut engine,
        &chat(json!({ "messages": question, "temperature": 0, "max_tokens": 8 })),
    );
    assert!(chunks.is_empty());
    assert_eq!(response["object"], "chat.completion");
    assert_eq!(response["model"], "smollm2");
    let answer = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("answer: {answer:?}");
    assert!(answer.contains("Paris"), "{response}");
    let usage = &response["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert_eq!(usage["total_tokens"].as_u64(), Some(prompt + completion));
    assert!(usage["extra"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);

    // Streamed: the same text in chunks, role first, finish reason last, then usage.
    let (streamed, chunks) = respond(
        &mut engine,
        &chat(
            json!({ "messages": question, "temperature": 0, "max_tokens": 8,
                      "stream": true, "stream_options": { "include_usage": true } }),
        ),
    );
    assert_eq!(streamed_text(&chunks), answer);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let n = chunks.len();
    assert_eq!(
        chunks[n - 2]["choices"][0]["finish_reason"],
        response["choices"][0]["finish_reason"]
    );
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"]["prompt_tokens"].as_u64(),
        Some(prompt)
    );
    // The second request reused the first one's KV cache for the whole prompt but its last token.
    assert_eq!(
        streamed["usage"]["extra"]["reused_prompt_tokens"].as_u64(),
        Some(prompt - 1)
    );

    // max_tokens cuts with "length"; a stop string ends with "stop" and is left out.
    let (short, _) = respond(
        &mut engine,
        &chat(json!({ "messages": question, "temperature": 0, "max_tokens": 2 })),
    );
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 2);
    let (stopped, _) = respond(
        &mut engine,
        &chat(json!({ "messages": question, "temperature": 0, "max_tokens": 8, "stop": "Paris" })),
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let text = stopped["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert_eq!(text, answer.split("Paris").next().unwrap());

    // An interrupt ends the answer with "abort" at the next token.
    let flag = engine.interrupt_handle();
    let request =
        chat(json!({ "messages": question, "temperature": 0, "max_tokens": 8, "stream": true }));
    let mut pieces = 0;
    let aborted = pollster::block_on(engine.respond(&request, &mut |_| {
        pieces += 1;
        flag.store(true, Ordering::SeqCst);
    }))
    .unwrap();
    assert_eq!(aborted["choices"][0]["finish_reason"], "abort");
    assert_eq!(aborted["usage"]["completion_tokens"], 1);

    // Text completions.
    let completion = Request::completion(
        &json!({ "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0 }),
        UnknownFields::Reject,
    )
    .unwrap();
    let (done, _) = respond(&mut engine, &completion);
    assert_eq!(done["object"], "text_completion");
    assert!(
        done["choices"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{done}"
    );

    // Seeded sampling repeats itself.
    let sampled =
        chat(json!({ "messages": question, "temperature": 1.0, "seed": 5, "max_tokens": 6 }));
    assert_eq!(
        respond(&mut engine, &sampled).0["choices"],
        respond(&mut engine, &sampled).0["choices"]
    );

    // Requests the engine refuses, with the numbers or the name.
    let refuse = |engine: &mut ChatEngine, body: Value| {
        pollster::block_on(engine.respond(&chat(body), &mut |_| {}))
            .unwrap_err()
            .to_string()
    };
    let err = refuse(
        &mut engine,
        json!({ "messages": question, "max_tokens": 1000 }),
    );
    assert!(err.contains("1000") && err.contains("256"), "{err}");
    let long = "word ".repeat(400);
    let err = refuse(
        &mut engine,
        json!({ "messages": [{ "role": "user", "content": long }] }),
    );
    assert!(err.contains("context of 256"), "{err}");
    let err = refuse(
        &mut engine,
        json!({ "messages": question, "model": "other" }),
    );
    assert!(err.contains("\"other\""), "{err}");
}

/// A lost device is an error saying so, not a panic or a hang; a new context loads again.
#[test]
fn a_lost_device_is_an_error_and_the_engine_can_be_made_again() {
    let Some(mut engine) = engine() else { return };
    let question = json!({ "messages": [{ "role": "user", "content": "Hi" }], "temperature": 0, "max_tokens": 2 });
    engine.session.model.gpu().device.destroy();
    let err = pollster::block_on(engine.respond(&chat(question.clone()), &mut |_| {})).unwrap_err();
    assert!(matches!(err, Error::DeviceLost(_)), "{err:?}");
    drop(engine);
    let mut again = self::engine().unwrap();
    let (response, _) = respond(&mut again, &chat(question));
    assert_eq!(response["usage"]["completion_tokens"], 2);
}

/// Function calling on SmolLM2, whose template knows no tools (the generic format: the
/// tools described in the system turn, calls as `<tool_call>` blocks): a named and a
/// `required` choice answer with calls whose arguments the tool's schema allows, streamed
/// as `delta.tool_calls` equal to the whole response's; a conversation carrying the call
/// and its result goes on in text; `none` hides the tools.
#[test]
fn tool_calls_follow_the_tools_schemas() {
    // The tools' descriptions take a system turn of their own.
    let Some(mut engine) = engine_with_context(512) else {
        return;
    };
    let weather = json!({"type": "function", "function": {
        "name": "get_weather", "description": "The current weather in a city",
        "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}});
    let time = json!({"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"], "additionalProperties": false}}});
    let ask = json!([{ "role": "user", "content": "What is the weather like in Paris?" }]);
    let check = |call: &Value, name: &str| {
        assert_eq!(call["type"], "function", "{call}");
        assert_eq!(call["function"]["name"], name, "{call}");
        let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{e}: {call}"));
        let args = args.as_object().unwrap();
        match name {
            "get_weather" => {
                assert!(
                    args["city"].as_str().unwrap().chars().count() <= 30,
                    "{call}"
                );
                assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
                assert_eq!(args.len(), 2, "{call}");
            }
            _ => assert_eq!(args.len(), 1, "{call}"),
        }
    };
    for (choice, stream) in [
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            false,
        ),
        (json!("required"), true),
    ] {
        let request = chat(json!({ "messages": ask, "tools": [weather, time],
            "tool_choice": choice, "parallel_tool_calls": false,
            "temperature": 0, "max_tokens": 80, "stream": stream }));
        let (response, chunks) = respond(&mut engine, &request);
        let choice_out = &response["choices"][0];
        assert_eq!(choice_out["finish_reason"], "tool_calls", "{response}");
        let calls = choice_out["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{response}");
        let name = calls[0]["function"]["name"].as_str().unwrap().to_string();
        if choice.is_object() {
            assert_eq!(name, "get_weather");
        }
        check(&calls[0], &name);
        if stream {
            // The call comes as its id and name, then its arguments; then the finish.
            let deltas: Vec<&Value> = chunks
                .iter()
                .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
                .collect();
            assert_eq!(deltas.len(), 2, "{chunks:?}");
            assert_eq!(deltas[0]["id"], calls[0]["id"]);
            assert_eq!(deltas[0]["function"]["name"], calls[0]["function"]["name"]);
            assert_eq!(
                deltas[1]["function"]["arguments"],
                calls[0]["function"]["arguments"]
            );
            assert_eq!(streamed_text(&chunks), "", "{chunks:?}");
            let finish = chunks
                .iter()
                .filter_map(|c| c.pointer("/choices/0/finish_reason"))
                .filter(|f| !f.is_null())
                .collect::<Vec<_>>();
            assert_eq!(finish, [&json!("tool_calls")]);
        }
    }

    // The call and its result in the conversation: the answer goes on in text.
    let history = json!([
        { "role": "user", "content": "What is the weather like in Paris?" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function",
            "function": { "name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21, \"sky\": \"sunny\"}" }
    ]);
    let (response, _) = respond(
        &mut engine,
        &chat(json!({ "messages": history, "tools": [weather],
        "tool_choice": "none", "temperature": 0, "max_tokens": 24 })),
    );
    let text = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(
        !text.is_empty() && response["choices"][0]["message"]["tool_calls"].is_null(),
        "{response}"
    );

    // Served with Llama 3.2's and Mistral Small 3.1's templates, the model is taught their
    // call formats, its call is held to one and read back, and the call (with the id glim
    // gave it: Mistral's template refuses ids under nine characters) and its result render
    // in the next turn's prompt.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/templates");
    let own = std::mem::replace(&mut engine.protocol.template, ChatTemplate::chatml("", ""));
    for (file, stream) in [
        ("meta-llama-Llama-3.2-1B-Instruct.jinja", false),
        ("mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja", true),
    ] {
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        engine.protocol.template =
            ChatTemplate::new(source, own.bos_token(), own.eos_token()).unwrap();
        // A short system turn: Mistral's default one is long.
        let ask = json!([{ "role": "system", "content": "Be brief." }, ask[0]]);
        let request = chat(json!({ "messages": ask, "tools": [weather],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "temperature": 0, "max_tokens": 60, "stream": stream }));
        let (response, chunks) = respond(&mut engine, &request);
        assert_eq!(
            response["choices"][0]["finish_reason"], "tool_calls",
            "{file}: {response}"
        );
        let calls = response["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap();
        assert_eq!(calls.len(), 1, "{file}: {response}");
        check(&calls[0], "get_weather");
        if stream {
            let streamed = chunks
                .iter()
                .filter_map(|c| c.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
                .filter(|a| a != &&json!(""))
                .collect::<Vec<_>>();
            assert_eq!(streamed, [&calls[0]["function"]["arguments"]], "{chunks:?}");
        }
        let history = json!([ask[0], ask[1],
            { "role": "assistant", "content": null, "tool_calls": calls },
            { "role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temperature\": 21}" }]);
        let next = chat(json!({ "messages": history, "tools": [weather] }));
        let prompt = engine.protocol.prompt_ids(&next.input, next.tools.as_ref());
        assert!(prompt.is_ok(), "{file}: {prompt:?}");
    }
    engine.protocol.template = own;

    // A request that mixes a required call with a response_format is refused.
    let both = chat(
        json!({ "messages": ask, "tools": [weather], "tool_choice": "required",
        "response_format": {"type": "json_object"} }),
    );
    let err = pollster::block_on(engine.respond(&both, &mut |_| {})).unwrap_err();
    assert!(err.to_string().contains("response_format"), "{err}");
}

/// Each template's call format, on SmolLM2's vocabulary: the grammar of a required call
/// takes the call as the template itself renders one in a conversation (as a whole, and
/// under `auto` from its trigger on), and it reads back as that call. No GPU.
#[test]
fn call_formats_hold_the_calls_their_templates_render() {
    let Some(path) = glim_tests::test_model() else {
        return;
    };
    let file = glim::formats::gguf::GgufFile::open(&path).unwrap();
    let tokenizer = glim::text::Tokenizer::from_gguf(&file).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/templates");
    let body = json!({"tools": [{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}],
        "tool_choice": "auto"});
    let auto = Tools::from_request(body.as_object().unwrap())
        .unwrap()
        .unwrap();
    // The calls as template_goldens.json has each template render them.
    for (file, call) in [
        ("Qwen-Qwen2.5-7B-Instruct.jinja",
         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>"),
        ("meta-llama-Llama-3.2-1B-Instruct.jinja",
         "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}"),
        ("mistralai-Mistral-Small-3.1-24B-Instruct-2503.jinja",
         "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}]"),
    ] {
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        let template = ChatTemplate::new(source, "", "").unwrap();
        let tools = auto.in_format(&template);
        let required = Tools {
            choice: ToolChoice::Required,
            // One call: the grammar is then done where it ends.
            parallel: false,
            ..tools.clone()
        };
        let grammar = required.grammar(&tokenizer).unwrap();
        let mut whole = Constraint::new(&tokenizer, &grammar).unwrap();
        let ids = tokenizer.encode(call, false).unwrap();
        assert!(whole.accept_all(&ids), "{file}: {grammar:?}");
        assert!(whole.is_done(), "{file}");
        let (trigger, grammar) = tools.grammar_after_opening(&tokenizer).unwrap();
        let rest = &call[call.find(&trigger).unwrap() + trigger.len()..];
        let mut after = Constraint::new(&tokenizer, &grammar).unwrap();
        let ids = tokenizer.encode(rest, false).unwrap();
        assert!(after.accept_all(&ids), "{file}: {grammar:?}");
        let (text, calls) = glim::api::tools::split_calls(call, &tools, 1);
        assert_eq!(text, "", "{file}");
        assert_eq!(calls.len(), 1, "{file}");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris","unit":"celsius"}"#);
    }
}

/// A model of another family (Gemma 3 270M, Q4_K_M, whose template knows no tools): a
/// required call's arguments and a schema's answer follow their schemas there too.
#[test]
fn gemma_calls_tools_and_answers_in_json() {
    let Some(path) = glim_tests::gemma_q4_k_m() else {
        return;
    };
    let Some(mut engine) = engine_for(path, 512) else {
        return;
    };
    let weather = json!({"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"], "additionalProperties": false}}});
    let ask = json!([{ "role": "user", "content": "What is the weather like in Paris?" }]);
    let (response, _) = respond(
        &mut engine,
        &chat(json!({ "messages": ask, "tools": [weather],
        "tool_choice": "required", "parallel_tool_calls": false, "temperature": 0, "max_tokens": 60 })),
    );
    assert_eq!(
        response["choices"][0]["finish_reason"], "tool_calls",
        "{response}"
    );
    let call = &response["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{response}");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        args["city"].as_str().unwrap().chars().count() <= 30,
        "{response}"
    );
    assert_eq!(args.as_object().unwrap().len(), 1, "{response}");

    let schema = json!({"type": "object", "properties": {"capital": {"enum": ["Paris", "Rome"]},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 100}},
        "required": ["capital", "population_millions"], "additionalProperties": false});
    let (response, _) = respond(
        &mut engine,
        &chat(json!({
        "messages": [{ "role": "user", "content": "France's capital and its population, as JSON." }],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        "temperature": 0, "max_tokens": 60 })),
    );
    let text = response["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        ["Paris", "Rome"].contains(&v["capital"].as_str().unwrap()),
        "{text}"
    );
    assert!(
        (0..=100).contains(&v["population_millions"].as_i64().unwrap()),
        "{text}"
    );
    assert_eq!(
        response["choices"][0]["finish_reason"], "stop",
        "{response}"
    );
}
