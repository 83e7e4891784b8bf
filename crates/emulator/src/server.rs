//! The server: accepting connections, injected latency and faults, the posture-expiry sweep,
//! committing mutations (audit log, webhook events, persistence) and shutting down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tailnet::clock::rfc3339;
use tailnet::{AuditActor, AuditLogEntry, AuditTarget, Clock, SystemClock, WebhookEvent};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::EmuClock;
use crate::error::{Error, Result};
use crate::http::{ApiError, ApiResult, Reply, Req, parse_form};
use crate::state::{State, random_token};
use crate::webhooks::{Delivery, Outgoing};

/// Requests larger than this are refused with 413.
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// How the emulator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Added to every `/api/v2` request.
    pub latency: StdDuration,
    /// Save the state here (atomically) after every mutation.
    pub persist: Option<PathBuf>,
    /// The base clock; the emulator's clock is this plus the offset tests set.
    pub clock: Arc<dyn Clock>,
    /// Pauses between webhook delivery attempts: one retry per entry (the real service retries
    /// hourly for a day; tests cannot wait that long).
    pub webhook_retries: Vec<StdDuration>,
    /// Events emitted within this window are delivered as one batch.
    pub webhook_batch_window: StdDuration,
    /// Timeout of one webhook delivery attempt.
    pub webhook_timeout: StdDuration,
    /// How often the background sweep removes expired posture attributes.
    pub tick: StdDuration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            latency: StdDuration::ZERO,
            persist: None,
            clock: Arc::new(SystemClock),
            webhook_retries: [100, 200, 400, 800, 1600]
                .into_iter()
                .map(StdDuration::from_millis)
                .collect(),
            webhook_batch_window: StdDuration::from_millis(20),
            webhook_timeout: StdDuration::from_secs(5),
            tick: StdDuration::from_millis(500),
        }
    }
}

/// An injected fault (`POST /emulator/faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Answer with this status (and the API's message for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Fire this many times, then go away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Fire on this fraction of matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// `Retry-After` seconds on a 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Delay before answering (or before handling the request normally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Close the connection without answering.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
    /// Only for paths starting with this (with or without `/api/v2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only for this method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Handle the request first, then answer with the fault: the change is made but the
    /// answer is lost (as when the caller crashes or the connection breaks after the write).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after: bool,
}

impl Fault {
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        if let Some(s) = self.status
            && !(400..=599).contains(&s)
        {
            return Err(format!("status {s} is not an error status"));
        }
        if let Some(f) = self.fraction
            && !(0.0..=1.0).contains(&f)
        {
            return Err("fraction must be between 0 and 1".to_owned());
        }
        if self.status.is_none() && self.delay_ms.is_none() && !self.drop {
            return Err("a fault needs status, delayMs or drop".to_owned());
        }
        Ok(())
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = self.path.as_deref().is_none_or(|p| {
            path.starts_with(p)
                || path
                    .strip_prefix("/api/v2")
                    .is_some_and(|rest| rest.starts_with(p))
        });
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        path_ok && method_ok && self.count != Some(0)
    }
}

/// The API's message for an injected status.
pub(crate) fn status_message(status: StatusCode) -> String {
    match status.as_u16() {
        400 => "bad request".to_owned(),
        401 => "unauthorized".to_owned(),
        403 => "forbidden".to_owned(),
        404 => "not found".to_owned(),
        409 => "conflict".to_owned(),
        429 => "too many requests".to_owned(),
        500 => "internal server error".to_owned(),
        501 => "not implemented".to_owned(),
        502 => "bad gateway".to_owned(),
        503 => "service unavailable".to_owned(),
        504 => "request took too long to process, please try again later".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    }
}

/// What a mutation did besides changing the state: audit entries are written to the state
/// directly; webhook events go out after the lock is released.
pub(crate) struct Ctx {
    pub now: OffsetDateTime,
    pub group: String,
    pub changed: bool,
    pub outgoing: Vec<Outgoing>,
}

pub(crate) struct AuditSpec<'a> {
    pub origin: &'a str,
    pub actor: AuditActor,
    pub target: AuditTarget,
    pub action: &'a str,
    pub old: Option<Json>,
    pub new: Option<Json>,
    pub details: String,
}

impl Ctx {
    fn new(now: OffsetDateTime) -> Ctx {
        Ctx {
            now,
            group: crate::state::random_token(32).to_ascii_lowercase(),
            changed: false,
            outgoing: Vec::new(),
        }
    }

    /// Appends a configuration audit log entry (and marks the state changed).
    pub fn audit(&mut self, st: &mut State, spec: AuditSpec<'_>) {
        self.changed = true;
        st.audit_log.push(AuditLogEntry {
            event_time: rfc3339(self.now),
            kind: "CONFIG".to_owned(),
            deferred_at: "0001-01-01T00:00:00Z".to_owned(),
            event_group_id: self.group.clone(),
            origin: spec.origin.to_owned(),
            actor: spec.actor,
            target: spec.target,
            action: spec.action.to_owned(),
            old: spec.old,
            new: spec.new,
            action_details: spec.details,
            error: String::new(),
        });
    }

    /// Queues a webhook event for every endpoint subscribed to `kind`.
    pub fn event(&mut self, st: &State, kind: &str, message: String, data: Json) {
        let event = WebhookEvent {
            timestamp: rfc3339(self.now),
            version: 1,
            kind: kind.to_owned(),
            tailnet: st.tailnet.clone(),
            message,
            data,
        };
        for w in &st.webhooks {
            if w.subscriptions.iter().any(|s| subscribed(s, kind)) {
                self.outgoing.push(Outgoing {
                    endpoint_id: w.endpoint_id.clone(),
                    event: event.clone(),
                });
            }
        }
    }
}

fn subscribed(subscription: &str, kind: &str) -> bool {
    use crate::api::webhooks::{MANAGEMENT_EVENTS, MISCONFIGURATION_EVENTS};
    subscription == kind
        || (subscription == "categoryTailnetManagement" && MANAGEMENT_EVENTS.contains(&kind))
        || (subscription == "categoryDeviceMisconfigurations"
            && MISCONFIGURATION_EVENTS.contains(&kind))
}

/// The emulator shared by every connection.
pub(crate) struct App {
    pub state: Mutex<State>,
    pub clock: Arc<EmuClock>,
    pub options: Options,
    pub faults: Mutex<Vec<Fault>>,
    pub deliveries: Mutex<Vec<Delivery>>,
    pub events: mpsc::UnboundedSender<Outgoing>,
    pub http: reqwest::Client,
    /// The rendered device list (generation, `fields=all`, JSON).
    pub devices_cache: Mutex<Vec<(u64, bool, Bytes)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl App {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn faults(&self) -> MutexGuard<'_, Vec<Fault>> {
        lock(&self.faults)
    }

    pub fn deliveries(&self) -> MutexGuard<'_, Vec<Delivery>> {
        lock(&self.deliveries)
    }

    /// Runs a mutation under the state lock; on success persists the state (when asked to)
    /// and sends the webhook events it queued.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut State, &mut Ctx) -> ApiResult<R>) -> ApiResult<R> {
        let mut st = self.lock();
        let mut ctx = Ctx::new(self.now());
        let out = f(&mut st, &mut ctx);
        if out.is_ok() && ctx.changed {
            self.persist(&st);
        }
        drop(st);
        if out.is_ok() {
            for o in ctx.outgoing {
                let _ = self.events.send(o);
            }
        }
        out
    }

    fn persist(&self, st: &State) {
        if let Some(path) = &self.options.persist
            && let Err(e) = st.save(path)
        {
            eprintln!("emulator: cannot save the state: {e}");
        }
    }

    /// Removes posture attributes whose expiry has passed.
    pub fn sweep(&self) {
        let now = self.now();
        {
            let st = self.lock();
            if st.next_expiry.is_none_or(|t| t > now) {
                return;
            }
        }
        let _ = self.mutate(|st, ctx| {
            crate::api::posture::sweep(st, ctx);
            Ok(())
        });
    }

    fn fault_for(&self, method: &str, path: &str) -> Option<Fault> {
        let mut faults = self.faults();
        let index = faults.iter().position(|f| f.matches(method, path))?;
        let fault = &mut faults[index];
        if let Some(fraction) = fault.fraction
            && rand::random::<f64>() >= fraction
        {
            return None;
        }
        let fired = fault.clone();
        if let Some(count) = fault.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                faults.remove(index);
            }
        }
        Some(fired)
    }
}

/// The connection was dropped on purpose (an injected fault).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    for (name, value) in reply.headers {
        response.headers_mut().append(name, value);
    }
    response
}

async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let is_api = path == "/api/v2" || path.starts_with("/api/v2/");
    let mut after_fault = None;
    if is_api {
        if !app.options.latency.is_zero() {
            tokio::time::sleep(app.options.latency).await;
        }
        if let Some(fault) = app.fault_for(parts.method.as_str(), &path) {
            if fault.after {
                after_fault = Some(fault);
            } else if let Some(reply) = fire(&fault).await {
                return reply;
            }
        }
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let err = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request("cannot read the request body")
            };
            return Ok(to_response(err.into_reply()));
        }
    };
    let query = match parts.uri.query() {
        None => Some(Vec::new()),
        Some(q) => parse_form(q),
    };
    let Some(query) = query else {
        return Ok(to_response(
            ApiError::bad_request("the query string is not valid UTF-8").into_reply(),
        ));
    };
    let req = Req {
        method: parts.method,
        path,
        query,
        headers: parts.headers,
        body,
    };
    app.sweep();
    let reply = if req.path == "/api/v2/oauth/token-exchange" && req.method == hyper::Method::POST {
        // The one call that waits on another server (the issuer's keys).
        crate::api::oauth::token_exchange(&app, &req).await
    } else if is_api {
        crate::api::route(&app, &req)
    } else if req.path == "/emulator" || req.path.starts_with("/emulator/") {
        crate::control::route(&app, &req)
    } else {
        Err(ApiError::not_found("not found"))
    };
    let response = to_response(reply.unwrap_or_else(ApiError::into_reply));
    if let Some(fault) = after_fault
        && let Some(reply) = fire(&fault).await
    {
        return reply;
    }
    Ok(response)
}

/// What an injected fault does: wait, then drop the connection or answer with its status.
async fn fire(fault: &Fault) -> Option<std::result::Result<Response<Full<Bytes>>, Dropped>> {
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(StdDuration::from_millis(ms)).await;
    }
    if fault.drop {
        return Some(Err(Dropped));
    }
    let status = fault.status.and_then(|s| StatusCode::from_u16(s).ok())?;
    let mut err = ApiError::new(status, status_message(status));
    if status == StatusCode::TOO_MANY_REQUESTS {
        err.retry_after = fault.retry_after;
    }
    Some(Ok(to_response(err.into_reply())))
}

/// A running emulator; dropping it shuts it down.
pub struct RunningEmulator {
    url: String,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    app: Arc<App>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT` (no trailing slash); the API is under `/api/v2`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of the current state.
    pub fn state(&self) -> State {
        self.app.lock().clone()
    }

    /// The emulator's current time.
    pub fn now(&self) -> OffsetDateTime {
        self.app.now()
    }

    /// How many OAuth access tokens are live (minted and not yet expired by the clock).
    pub fn minted_tokens(&self) -> usize {
        self.app.lock().tokens.len()
    }

    /// Stops accepting connections, lets open ones finish their current request, and waits.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Binds `127.0.0.1:0` and serves `state` there.
pub async fn start(state: State, options: Options) -> Result<RunningEmulator> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::Listen)?;
    serve(listener, state, options).await
}

/// Serves `state` on `listener` until the returned handle is shut down or dropped.
pub async fn serve(
    listener: TcpListener,
    state: State,
    options: Options,
) -> Result<RunningEmulator> {
    let addr = listener.local_addr().map_err(Error::Listen)?;
    let url = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("http://[::1]:{}", a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => format!("http://{a}"),
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let http = reqwest::Client::builder()
        .timeout(options.webhook_timeout)
        .build()
        .map_err(|e| Error::Listen(std::io::Error::other(e)))?;
    let app = Arc::new(App {
        state: Mutex::new(state),
        clock: Arc::new(EmuClock::new(options.clock.clone())),
        options,
        faults: Mutex::new(Vec::new()),
        deliveries: Mutex::new(Vec::new()),
        events: events_tx,
        http,
        devices_cache: Mutex::new(Vec::new()),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(accept_loop(listener, app.clone(), shutdown_rx.clone())),
        tokio::spawn(ticker(Arc::downgrade(&app), shutdown_rx.clone())),
        tokio::spawn(crate::webhooks::dispatcher(
            Arc::downgrade(&app),
            events_rx,
            shutdown_rx,
        )),
    ];
    Ok(RunningEmulator {
        url,
        addr,
        shutdown: shutdown_tx,
        tasks,
        app,
    })
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(StdDuration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(app.clone(), request));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn ticker(app: std::sync::Weak<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let tick = match app.upgrade() {
            Some(app) => {
                app.sweep();
                app.options.tick
            }
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A fresh random id suffix.
pub(crate) fn new_secret(prefix: &str, id: &str) -> String {
    format!("{prefix}-{id}-{}", random_token(32))
}
