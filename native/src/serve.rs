//! `glim serve`: an OpenAI-compatible HTTP server (axum on tokio).
//!
//! HTTP handlers read and check requests through the engine's `api` module (the same code
//! the browser package uses), then queue them for the engine thread, which owns the GPU
//! and a [`Batcher`]: every request in a slot is decoded in one batched step, new requests
//! join between steps. Each request hears its events on a channel of its own; a client that
//! goes away drops its receiver, and the batcher frees the slot at its next step.
//!
//! The server listens before the model is loaded and answers 503 until it is.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{stream, Stream, StreamExt};
use glim::api::{Defaults, Prepared, Protocol, Request, UnknownFields};
use glim::generate::{Batcher, Event, Listener};
use glim::model::graph::LoadOptions;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{bail, model, CliResult, ServeArgs};

/// A request handed to the engine thread.
struct Job {
    prompt: Vec<u32>,
    params: glim::generate::GenerationParams,
    events: mpsc::UnboundedSender<Event>,
}

/// What the handlers share.
struct App {
    /// Set once the model is loaded.
    ready: OnceLock<Ready>,
    api_key: Option<String>,
    requests: AtomicU64,
    /// Requests being prepared (chat template, tokenizer, grammar) at once, off the async
    /// threads: the template is the model file's code, and a costly one must not stall the
    /// server nor run once per open connection.
    preparing: tokio::sync::Semaphore,
    /// `--max-body`.
    max_body: usize,
}

struct Ready {
    protocol: Protocol,
    jobs: mpsc::Sender<Job>,
}

/// An error in OpenAI's shape with its status.
struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                "invalid_request_error"
            }
            _ => "server_error",
        };
        let code = match self.status {
            StatusCode::UNAUTHORIZED => json!("invalid_api_key"),
            StatusCode::SERVICE_UNAVAILABLE => json!("unavailable"),
            _ => Value::Null,
        };
        let body = json!({
            "error": { "message": self.message, "type": kind, "param": null, "code": code }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Lets the batcher talk to one HTTP request.
struct ChannelListener(mpsc::UnboundedSender<Event>);

impl Listener for ChannelListener {
    fn event(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }

    fn gone(&self) -> bool {
        self.0.is_closed()
    }
}

pub fn serve(args: ServeArgs) -> CliResult<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let path = model::resolve(args.model.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| crate::CliError(format!("cannot start the server's runtime: {e}")))?;
    runtime.block_on(run(args, &path))
}

async fn run(args: ServeArgs, path: &Path) -> CliResult<()> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| {
            // A host name such as localhost.
            std::net::ToSocketAddrs::to_socket_addrs(&(args.host.as_str(), args.port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|()| crate::CliError(format!("cannot listen on {}:{}", args.host, args.port)))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::CliError(format!("cannot listen on {addr}: {e}")))?;
    let app = Arc::new(App {
        ready: OnceLock::new(),
        api_key: args.api_key.clone(),
        requests: AtomicU64::new(0),
        max_body: args.max_body,
        preparing: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ),
    });
    let router = router(app.clone(), &args)?;
    eprintln!("glim serve: listening on http://{addr} (loading the model)");

    // Load on a thread of its own, which then runs the engine; the server answers 503
    // meanwhile.
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let options = LoadOptions {
        format: args.load.quant.map(Into::into),
        context: args.ctx,
        slots: args.parallel,
        ..LoadOptions::default()
    };
    let model_path = path.to_path_buf();
    let (queue, parallel) = (args.queue, args.parallel);
    let model_id = model_id(path);
    std::thread::spawn(move || {
        let loaded = match model::load(&model_path, &options) {
            Ok(loaded) => loaded,
            Err(e) => {
                let _ = loaded_tx.send(Err(e));
                return;
            }
        };
        // A model folder's sampling defaults apply to requests that leave them out, as
        // with MLC's own server; OpenAI's otherwise.
        let defaults = match loaded.chat_config.as_ref().map(Defaults::from_chat_config) {
            None => Defaults::default(),
            Some(Ok(defaults)) => defaults,
            Some(Err(e)) => {
                let _ = loaded_tx.send(Err(crate::CliError(format!(
                    "{}: {e}",
                    model_path.display()
                ))));
                return;
            }
        };
        let protocol = Protocol {
            tokenizer: loaded.tokenizer.clone(),
            template: loaded.template,
            model_id,
            defaults,
            context: loaded.model.context,
        };
        let (jobs, receiver) = mpsc::channel(queue.max(1));
        let batcher = Batcher::new(loaded.model, loaded.tokenizer);
        let _ = loaded_tx.send(Ok(Ready { protocol, jobs }));
        engine_loop(batcher, receiver);
    });

    let server = tokio::spawn(async move {
        tokio::select! {
            () = serve_connections(listener, router) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    });
    match loaded_rx.await {
        Ok(Ok(ready)) => {
            eprintln!(
                "glim serve: {} ready on http://{addr}/v1 ({parallel} slots of {} tokens)",
                ready.protocol.model_id, ready.protocol.context
            );
            let _ = app.ready.set(ready);
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!("the model loader stopped without a word"),
    }
    match server.await {
        Ok(()) => Ok(()),
        Err(e) => bail!("the server failed: {e}"),
    }
}

/// Most connections open at once; past it a new connection is closed at once, so a flood
/// of them cannot use up the process's file descriptors.
const MAX_CONNECTIONS: usize = 512;
/// How long a connection may take to send a request's headers (also the idle time allowed
/// between requests on a kept-alive connection); then it is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The slowest a request body may arrive, in bytes per second, past a first
/// [`HEADER_TIMEOUT`]: a client that trickles its body is shed like a silent one.
const MIN_BODY_RATE: u64 = 64 << 10;

/// Accepts connections and serves each on a task of its own. This is `axum::serve` plus
/// the two limits above, which it does not offer: without them, clients that connect and
/// send nothing would hold their sockets for ever.
async fn serve_connections(listener: tokio::net::TcpListener, router: Router) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // A client that gave up before its connection was taken.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                continue
            }
            Err(e) => {
                // Out of file descriptors, say: wait for some to close rather than spin.
                eprintln!("glim serve: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            continue; // too many open: this one is dropped
        };
        let _ = stream.set_nodelay(true); // stream each token as it comes
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// The name the server answers to: the model file's or folder's name without extension.
fn model_id(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}

fn router(app: Arc<App>, args: &ServeArgs) -> CliResult<Router> {
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(one_model))
        .route(
            "/v1/chat/completions",
            post(|State(app), headers, body| answer(app, headers, body, Request::chat)),
        )
        .route(
            "/v1/completions",
            post(|State(app), headers, body| answer(app, headers, body, Request::completion)),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("this route does not take {method} requests"),
            )
        })
        .with_state(app);
    if let Some(origin) = &args.cors {
        let allow = if origin == "*" {
            AllowOrigin::any()
        } else {
            let value = HeaderValue::from_str(origin)
                .map_err(|_| crate::CliError(format!("--cors {origin:?} is not an origin")))?;
            AllowOrigin::exact(value)
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    Ok(router)
}

/// The engine thread: admits queued jobs into free slots and steps the batcher while any
/// request runs; sleeps on the queue while none does.
fn engine_loop(mut batcher: Batcher, mut jobs: mpsc::Receiver<Job>) {
    let start = |batcher: &mut Batcher, job: Job| {
        if job.events.is_closed() {
            return; // its client left while it waited
        }
        let listener = Box::new(ChannelListener(job.events.clone()));
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batcher.start(job.prompt, &job.params, listener)
        }));
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = job.events.send(Event::Failed(e.to_string()));
            }
            Err(_) => {
                let _ = job
                    .events
                    .send(Event::Failed("internal error starting the request".into()));
            }
        }
    };
    loop {
        while batcher.has_free_slot() {
            match jobs.try_recv() {
                Ok(job) => start(&mut batcher, job),
                Err(_) => break,
            }
        }
        if batcher.active() == 0 {
            match jobs.blocking_recv() {
                Some(job) => start(&mut batcher, job),
                None => return, // the server is gone
            }
            continue;
        }
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pollster::block_on(batcher.step())
        }));
        match stepped {
            Ok(Ok(_)) => {}
            // Every running request heard it; the next ones get their own chance.
            Ok(Err(e)) => eprintln!(
                "glim serve: generation failed: {}",
                crate::one_line(&e.to_string())
            ),
            // A bug, not the requests' fault: they end with it, and the server goes on
            // rather than answering "the engine has stopped" from then on.
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                eprintln!(
                    "glim serve: generation panicked: {}",
                    crate::one_line(&what)
                );
                batcher.fail_all(&format!("internal error while generating: {what}"));
            }
        }
    }
}

fn check_key(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &app.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.map(str::trim) == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid API key is required: send `Authorization: Bearer <key>`",
        ))
    }
}

fn ready(app: &App) -> Result<&Ready, ApiError> {
    app.ready.get().ok_or_else(|| {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is loading");
        e.retry_after = Some(5);
        e
    })
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.ready.get() {
        Some(_) => Json(json!({ "status": "ok" })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "loading" })),
        )
            .into_response(),
    }
}

fn model_object(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "glim" })
}

async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    check_key(&app, &headers)?;
    let ready = ready(&app)?;
    Ok(Json(json!({
        "object": "list",
        "data": [model_object(&ready.protocol.model_id)],
    })))
}

async fn one_model(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_key(&app, &headers)?;
    let ready = ready(&app)?;
    if id != ready.protocol.model_id {
        return Err(unknown_model(&id, &ready.protocol.model_id));
    }
    Ok(Json(model_object(&id)))
}

fn unknown_model(asked: &str, served: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("the model {asked:?} does not exist here; this server runs {served:?}"),
    )
}

/// Checks a request, queues it and answers: a stream of Server-Sent Events, or the whole
/// response once generated.
async fn answer(
    app: Arc<App>,
    headers: HeaderMap,
    body: Body,
    parse: fn(&Value, UnknownFields) -> glim::Result<Request>,
) -> Response {
    if let Err(e) = check_key(&app, &headers) {
        return e.into_response();
    }
    let body = match read_body(&headers, body, app.max_body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let Ok(permit) = app.preparing.acquire().await else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
            .into_response();
    };
    let worker = app.clone();
    let queued = tokio::task::spawn_blocking(move || queue(&worker, body, parse))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("preparing the request failed: {e}"),
            ))
        });
    drop(permit);
    match queued {
        Ok((prepared, events)) if prepared.reply.stream => stream(prepared, events).into_response(),
        Ok((prepared, events)) => whole(prepared, events).await,
        Err(e) => e.into_response(),
    }
}

/// A request's body, read within its deadline: [`HEADER_TIMEOUT`] plus the time its size
/// takes at [`MIN_BODY_RATE`]. A body declared larger than `max` bytes is refused before
/// any of it is read, one that grows past it as soon as it does.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than this server takes (--max-body {max} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let size = declared.unwrap_or(max as u64);
    let deadline = HEADER_TIMEOUT + Duration::from_secs(size / MIN_BODY_RATE);
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            if bytes.len() + chunk.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    deadline.as_secs()
                ),
            ))
        })
}

fn queue(
    app: &App,
    body: Bytes,
    parse: fn(&Value, UnknownFields) -> glim::Result<Request>,
) -> Result<(Prepared, mpsc::UnboundedReceiver<Event>), ApiError> {
    let ready = ready(app)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let request =
        parse(&value, UnknownFields::Ignore).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let protocol = &ready.protocol;
    if let Some(asked) = request.model.as_deref() {
        if !protocol.serves(Some(asked)) {
            return Err(unknown_model(asked, &protocol.model_id));
        }
    }
    let number = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let prepared = protocol
        .prepare(&request, number)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (events, receiver) = mpsc::unbounded_channel();
    let job = Job {
        prompt: prepared.prompt.clone(),
        params: prepared.params.clone(),
        events,
    };
    ready.jobs.try_send(job).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy: every slot is generating and the queue is full; try again shortly",
            );
            e.retry_after = Some(1);
            e
        }
        mpsc::error::TrySendError::Closed(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the engine has stopped",
        ),
    })?;
    Ok((prepared, receiver))
}

/// The answer as Server-Sent Events: a chunk per piece of text, the finishing chunks, then
/// `data: [DONE]`. Dropping the stream (the client left) drops the receiver, which frees
/// the request's slot.
fn stream(
    prepared: Prepared,
    events: mpsc::UnboundedReceiver<Event>,
) -> Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let mut reply = prepared.reply;
    let events = stream::unfold(events, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    });
    let chunks = events.flat_map(move |event| {
        let data: Vec<String> = match event {
            Event::Text(piece) => reply
                .text_chunk(&piece)
                .map(|c| c.to_string())
                .into_iter()
                .collect(),
            Event::Done { text, stats } => {
                let mut data: Vec<String> = reply
                    .final_chunks(&text, &stats)
                    .iter()
                    .map(Value::to_string)
                    .collect();
                data.push("[DONE]".into());
                data
            }
            Event::Failed(message) => {
                let error = json!({ "error": { "message": message, "type": "server_error",
                                               "param": null, "code": null } });
                vec![error.to_string(), "[DONE]".into()]
            }
        };
        stream::iter(data.into_iter().map(|d| Ok(SseEvent::default().data(d))))
    });
    Sse::new(chunks).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The whole response, once generation ends.
async fn whole(prepared: Prepared, mut events: mpsc::UnboundedReceiver<Event>) -> Response {
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(_) => {}
            Event::Done { text, stats } => {
                return Json(prepared.reply.response(&text, &stats)).into_response()
            }
            Event::Failed(message) => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message).into_response()
            }
        }
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the engine stopped before the answer was done",
    )
    .into_response()
}
