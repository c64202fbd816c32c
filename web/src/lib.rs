//! The wasm-bindgen half of the npm package `glim-llm`: one class, `Engine`, that opens
//! WebGPU, streams a model folder's shards or a GGUF file's chunks onto it and answers
//! OpenAI-shaped requests through the engine crate's `api::ChatEngine`. The package's
//! JavaScript (`web/js/`) fetches and caches the bytes, gives errors their classes and
//! carries everything to and from a Web Worker; nothing of the model lives there.
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use glim::api::{ChatEngine, Defaults, Request, UnknownFields};
use glim::formats::gguf_chunks::{Chunk, DEFAULT_CHUNK_BYTES};
use glim::formats::mlc::{ResidentShards, TensorCache, INDEX_FILE};
use glim::generate::Session;
use glim::gpu::{AdapterChoice, GpuContext, KernelSet, Precision};
use glim::kernels::matmul::GemvLaunch;
use glim::model::graph::{LoadOptions, Model, ModelLoader};
use glim::model::mlc::{mlc_text, MlcModel};
use glim::model::streamed::{
    load_streamed, load_streamed_gguf, open_streamed_gguf, StreamProgress,
};
use glim::text::{ChatTemplate, Tokenizer};
use js_sys::{Function, Promise, Reflect, Uint8Array};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

/// Shards fetched at once while loading.
const DEFAULT_PARALLEL_FETCHES: usize = 4;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
    let _ = console_log::init_with_level(log::Level::Warn);
}

/// A JavaScript `Error` whose `name` the package turns into its error class.
fn js_error(name: &str, message: impl AsRef<str>) -> JsValue {
    let e = js_sys::Error::new(message.as_ref());
    e.set_name(name);
    e.into()
}

/// The error class for a failure of the GPU, whatever was being done.
fn gpu_error_class(e: &glim::Error) -> Option<&'static str> {
    use glim::Error::*;
    match e {
        NoAdapter(_) | Device(_) => Some("WebGPUUnavailableError"),
        TooLarge(_) | OutOfMemory(_) => Some("ModelTooLargeError"),
        DeviceLost(_) => Some("DeviceLostError"),
        _ => None,
    }
}

fn load_error(e: glim::Error) -> JsValue {
    js_error(
        gpu_error_class(&e).unwrap_or("ModelLoadError"),
        e.to_string(),
    )
}

fn request_error(e: glim::Error) -> JsValue {
    let class = match &e {
        glim::Error::Invalid(_) => "InvalidRequestError",
        other => gpu_error_class(other).unwrap_or("Error"),
    };
    js_error(class, e.to_string())
}

/// `options[key]`, or `undefined`.
fn get(options: &JsValue, key: &str) -> JsValue {
    Reflect::get(options, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn get_string(options: &JsValue, key: &str) -> Result<String, JsValue> {
    get(options, key).as_string().ok_or_else(|| {
        js_error(
            "ModelLoadError",
            format!("load options: `{key}` is missing"),
        )
    })
}

fn get_function(options: &JsValue, key: &str) -> Result<Function, JsValue> {
    get(options, key).dyn_into().map_err(|_| {
        js_error(
            "ModelLoadError",
            format!("load options: `{key}` must be a function"),
        )
    })
}

fn get_usize(options: &JsValue, key: &str) -> Option<usize> {
    get(options, key)
        .as_f64()
        .filter(|x| x.is_finite() && *x >= 1.0)
        .map(|x| x as usize)
}

/// What the engine is doing: a request takes the model out while it runs, so a second
/// request at the same time is refused instead of interleaving with the first.
enum State {
    Ready(Box<ChatEngine>),
    Busy,
    Unloaded,
}

/// A model on the GPU, answering requests.
#[wasm_bindgen]
pub struct Engine {
    state: Rc<RefCell<State>>,
    interrupt: Arc<AtomicBool>,
    info: String,
}

#[wasm_bindgen]
impl Engine {
    /// Loads a model folder. `options`: `{ modelId, baseUrl, chatConfig, tensorCache,
    /// tokenizer (Uint8Array), tokenizerConfig?, contextWindowSize?, parallelFetches?,
    /// fetchShard(n, fresh) -> Promise<Uint8Array>, onShardVerified(n), onProgress(report) }`.
    /// Resolves to an `Engine`.
    pub fn load(options: JsValue) -> Promise {
        future_to_promise(async move { load(options).await.map(JsValue::from) })
    }

    /// Loads a GGUF file. `options`: `{ modelId, url, fileSizes, chunkBytes?,
    /// contextWindowSize?, parallelFetches?, fetchChunk({ part, index, start, end, fresh })
    /// -> Promise<Uint8Array>, onProgress(report) }`: `fileSizes` has one size, or a split
    /// model's parts' sizes in order; `fetchChunk` gives bytes `start..end` of part `part`
    /// (`fresh`: a first copy had the wrong length, so bypass any cache). Resolves to an
    /// `Engine`.
    #[wasm_bindgen(js_name = loadGguf)]
    pub fn load_gguf(options: JsValue) -> Promise {
        future_to_promise(async move { load_gguf(options).await.map(JsValue::from) })
    }

    /// Answers a `/chat/completions` body (JSON text); streamed chunks go to `on_chunk` as
    /// JSON text. Resolves to the whole response as JSON text.
    #[wasm_bindgen(js_name = chatCompletion)]
    pub fn chat_completion(&self, body: String, on_chunk: Function) -> Promise {
        self.respond(body, on_chunk, true)
    }

    /// Answers a `/completions` body, as [`Engine::chat_completion`].
    pub fn completion(&self, body: String, on_chunk: Function) -> Promise {
        self.respond(body, on_chunk, false)
    }

    /// Stops the answer being generated after its current token.
    pub fn interrupt(&self) {
        self.interrupt.store(true, Ordering::SeqCst);
    }

    /// Forgets the KV cache.
    pub fn reset(&self) -> Result<(), JsValue> {
        match &mut *self.state.borrow_mut() {
            State::Ready(engine) => {
                engine.reset();
                Ok(())
            }
            State::Busy => Err(js_error(
                "Error",
                "a request is running; interrupt it first",
            )),
            State::Unloaded => Ok(()),
        }
    }

    #[wasm_bindgen(js_name = runtimeStatsText)]
    pub fn runtime_stats_text(&self) -> String {
        match &*self.state.borrow() {
            State::Ready(engine) => engine.runtime_stats_text(),
            State::Busy => "a request is running".into(),
            State::Unloaded => "no model loaded".into(),
        }
    }

    /// The adapter and model, as JSON text.
    pub fn info(&self) -> String {
        self.info.clone()
    }

    /// Frees the model's GPU memory; later requests fail.
    pub fn unload(&self) {
        self.interrupt();
        *self.state.borrow_mut() = State::Unloaded;
    }

    fn respond(&self, body: String, on_chunk: Function, chat: bool) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let value: Value = serde_json::from_str(&body).map_err(|e| {
                js_error(
                    "InvalidRequestError",
                    format!("the request is not valid JSON: {e}"),
                )
            })?;
            let request = if chat {
                Request::chat(&value, UnknownFields::Reject)
            } else {
                Request::completion(&value, UnknownFields::Reject)
            }
            .map_err(request_error)?;
            let mut engine = match std::mem::replace(&mut *state.borrow_mut(), State::Busy) {
                State::Ready(engine) => engine,
                other => {
                    let message = match other {
                        State::Busy => "a request is already running: await it, or call interruptGenerate() first",
                        _ => "the model was unloaded: create a new engine",
                    };
                    *state.borrow_mut() = other;
                    return Err(js_error("Error", message));
                }
            };
            let result = engine
                .respond(&request, &mut |chunk| {
                    let _ = on_chunk.call1(&JsValue::NULL, &JsValue::from_str(&chunk.to_string()));
                })
                .await;
            let mut slot = state.borrow_mut();
            // unload() during the request wins: the model is dropped here.
            if matches!(*slot, State::Busy) {
                *slot = State::Ready(engine);
            }
            result
                .map(|response| JsValue::from_str(&response.to_string()))
                .map_err(request_error)
        })
    }
}

/// Reports load progress to `on_progress` as `{ stage, text, ... }`.
fn report(on_progress: &Function, fields: Value) {
    if let Ok(obj) = js_sys::JSON::parse(&fields.to_string()) {
        let _ = on_progress.call1(&JsValue::NULL, &obj);
    }
}

async fn load(options: JsValue) -> Result<Engine, JsValue> {
    let model_id = get_string(&options, "modelId")?;
    let base_url = get_string(&options, "baseUrl")?;
    let fetch_shard = get_function(&options, "fetchShard")?;
    let on_verified = get_function(&options, "onShardVerified")?;
    let on_progress = get_function(&options, "onProgress")?;
    let parse = |key: &str, what: &str| -> Result<Value, JsValue> {
        serde_json::from_str(&get_string(&options, key)?).map_err(|e| {
            js_error(
                "ModelLoadError",
                format!("{base_url}{what}: not valid JSON: {e}"),
            )
        })
    };
    let chat_config = parse("chatConfig", "mlc-chat-config.json")?;
    let index_text = get_string(&options, "tensorCache")?;
    let index = TensorCache::parse(index_text.as_bytes(), &format!("{base_url}{INDEX_FILE}"))
        .map_err(load_error)?;
    let tokenizer_json = Uint8Array::new(&get(&options, "tokenizer")).to_vec();
    let tokenizer_config = get(&options, "tokenizerConfig").as_string();
    let (tokenizer, template) = mlc_text(
        &tokenizer_json,
        tokenizer_config.as_deref().map(str::as_bytes),
        &chat_config,
    )
    .map_err(|e| js_error("ModelLoadError", format!("{base_url}: {e}")))?;
    let mut model = MlcModel::new(ResidentShards::new(index, base_url.clone()), chat_config)
        .map_err(load_error)?;

    let (ctx, adapter) = open_gpu(&options).await?;
    let options_for_load = LoadOptions {
        format: None,
        context: get_usize(&options, "contextWindowSize").unwrap_or(LoadOptions::default().context),
        // f32 models (q4f32_1) run with f32 activations, as MLC runs them.
        precision: model.quant.f32_model().then_some(Precision::F32),
        ..LoadOptions::default()
    };
    let loader =
        ModelLoader::new(ctx, model.config.clone(), &options_for_load).map_err(load_error)?;
    let window = get_usize(&options, "parallelFetches").unwrap_or(DEFAULT_PARALLEL_FETCHES);
    let fetch = |n: usize, fresh: bool| {
        bytes_of(fetch_shard.call2(
            &JsValue::NULL,
            &JsValue::from(n as u32),
            &JsValue::from(fresh),
        ))
    };
    let mut progress = |p: StreamProgress| {
        let _ = on_verified.call1(&JsValue::NULL, &JsValue::from(p.piece as u32));
        report(
            &on_progress,
            json!({
                "stage": "upload",
                "shardsDone": p.pieces_done,
                "shardsTotal": p.pieces_total,
                "bytesDone": p.bytes_done,
                "bytesTotal": p.bytes_total,
                "residentBytes": p.resident_bytes,
            }),
        );
    };
    let llama = load_streamed(loader, &mut model, fetch, window, &mut progress)
        .await
        .map_err(load_error)?;
    let defaults = Defaults::from_chat_config(&model.chat_config).map_err(load_error)?;
    ready(llama, tokenizer, template, model_id, adapter, defaults)
}

/// The WebGPU device, running the kernel set `options.kernels` asks for (`"cpu"` or
/// `"gpu"`; the adapter's own otherwise).
async fn open_gpu(options: &JsValue) -> Result<(GpuContext, Value), JsValue> {
    let mut ctx = GpuContext::new(&AdapterChoice::default())
        .await
        .map_err(load_error)?;
    match get(options, "kernels").as_string().as_deref() {
        None => {}
        Some("cpu") => ctx.use_kernels(KernelSet::Cpu),
        Some("gpu") => ctx.use_kernels(KernelSet::Gpu),
        Some(other) => {
            return Err(js_error(
                "ModelLoadError",
                format!("load options: `kernels` is {other:?}, not \"cpu\" or \"gpu\""),
            ))
        }
    }
    if let Some(text) = get(options, "gemv").as_string() {
        let launch = GemvLaunch::parse(&text).map_err(|why| {
            js_error(
                "ModelLoadError",
                format!("load options: `gemv` {text:?}: {why}"),
            )
        })?;
        ctx.use_gemv(launch);
    }
    let adapter = adapter_info(&ctx);
    Ok((ctx, adapter))
}

/// What `info()` says of the adapter and the kernels that run on it.
fn adapter_info(ctx: &GpuContext) -> Value {
    let summary = &ctx.summary;
    let gemv = GemvLaunch::for_context(ctx);
    json!({
        "adapter": summary.name,
        "backend": summary.backend,
        "shaderF16": summary.shader_f16,
        "subgroupSize": ctx.subgroup_size(),
        "kernels": match ctx.kernel_set() {
            KernelSet::Cpu => "cpu",
            KernelSet::Gpu => "gpu",
        },
        // How a matrix-vector product spreads over threads, and how a team adds up its
        // partial sums: by subgroup shuffles or over workgroup memory.
        "gemv": {
            "team": gemv.team,
            "teams": gemv.teams,
            "reduction": if gemv.subgroup { "subgroup" } else { "workgroup" },
        },
        "maxStorageBufferBindingSize": summary.max_storage_binding,
    })
}

/// Loads a GGUF file by chunks (see [`Engine::load_gguf`]).
async fn load_gguf(options: JsValue) -> Result<Engine, JsValue> {
    let model_id = get_string(&options, "modelId")?;
    let url = get_string(&options, "url")?;
    let fetch_chunk = get_function(&options, "fetchChunk")?;
    let on_progress = get_function(&options, "onProgress")?;
    let sizes = js_sys::Array::from(&get(&options, "fileSizes"));
    let file_sizes: Vec<u64> = sizes
        .iter()
        .map(|v| {
            v.as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(|x| x as u64)
        })
        .collect::<Option<_>>()
        .filter(|v: &Vec<u64>| !v.is_empty())
        .ok_or_else(|| {
            js_error(
                "ModelLoadError",
                "load options: `fileSizes` must list the file's size (or its parts')",
            )
        })?;
    let chunk_bytes = get_usize(&options, "chunkBytes")
        .map(|n| n as u64)
        .unwrap_or(DEFAULT_CHUNK_BYTES);
    let mut fetch = |chunk: Chunk| {
        let request = json!({
            "part": chunk.part,
            "index": chunk.index,
            "start": chunk.start,
            "end": chunk.end,
            "fresh": chunk.fresh,
        });
        let request = js_sys::JSON::parse(&request.to_string()).unwrap_or(JsValue::NULL);
        bytes_of(fetch_chunk.call1(&JsValue::NULL, &request))
    };
    let (mut gguf, config) = open_streamed_gguf(&url, &file_sizes, chunk_bytes, &mut fetch)
        .await
        .map_err(load_error)?;
    let text = |e: glim::Error| js_error("ModelLoadError", format!("{url}: {e}"));
    let tokenizer = Tokenizer::from_gguf(gguf.header()).map_err(text)?;
    let template = ChatTemplate::from_tokenizer(&tokenizer).map_err(text)?;

    let (ctx, adapter) = open_gpu(&options).await?;
    let load_options = LoadOptions {
        context: get_usize(&options, "contextWindowSize").unwrap_or(LoadOptions::default().context),
        ..LoadOptions::default()
    };
    // The adapter's limits are checked here, before a byte of the weights is fetched.
    let loader = ModelLoader::new(ctx, config, &load_options).map_err(load_error)?;
    let window = get_usize(&options, "parallelFetches").unwrap_or(DEFAULT_PARALLEL_FETCHES);
    let mut progress = |p: StreamProgress| {
        report(
            &on_progress,
            json!({
                "stage": "upload",
                "bytesDone": p.bytes_done,
                "bytesTotal": p.bytes_total,
                "residentBytes": p.resident_bytes,
            }),
        );
    };
    let llama = load_streamed_gguf(loader, &mut gguf, fetch, window, &mut progress)
        .await
        .map_err(load_error)?;
    ready(
        llama,
        tokenizer,
        template,
        model_id,
        adapter,
        Defaults::default(),
    )
}

/// The engine for a loaded model, once its tokenizer is known to fit it.
fn ready(
    mut llama: Model,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    model_id: String,
    adapter: Value,
    defaults: Defaults,
) -> Result<Engine, JsValue> {
    llama.fit_tokenizer(&tokenizer).map_err(load_error)?;
    let mut info = json!({
        "model": model_id,
        "format": llama.weight_formats(),
        "precision": format!("{:?}", llama.precision).to_lowercase(),
        "context": llama.context,
        "weightBytes": llama.weight_bytes(),
    });
    if let (Some(info), Value::Object(adapter)) = (info.as_object_mut(), adapter) {
        info.extend(adapter);
    }
    let info = info.to_string();
    let mut engine = ChatEngine::new(Session::new(llama, tokenizer), template, model_id);
    engine.protocol.defaults = defaults;
    Ok(Engine {
        interrupt: engine.interrupt_handle(),
        state: Rc::new(RefCell::new(State::Ready(Box::new(engine)))),
        info,
    })
}

/// The bytes a fetch callback's promise resolves to (the callback has been called, so the
/// transfer is under way).
async fn bytes_of(called: Result<JsValue, JsValue>) -> glim::Result<Vec<u8>> {
    let promise: Promise = called
        .and_then(|p| {
            p.dyn_into()
                .map_err(|_| js_error("Error", "the fetch callback must return a Promise"))
        })
        .map_err(|e| glim::Error::Invalid(describe(&e)))?;
    let bytes = JsFuture::from(promise)
        .await
        .map_err(|e| glim::Error::Invalid(describe(&e)))?;
    Ok(Uint8Array::new(&bytes).to_vec())
}

/// A thrown JavaScript value in words.
fn describe(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}
