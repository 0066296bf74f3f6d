//! Who may use the HTTP API when `http_token` is set, and how a browser proves it.
//!
//! Two ways in: `Authorization: Bearer TOKEN` (scripts, curl), or the session cookie that
//! `POST /api/v1/login` sets after the token was typed into the page. The cookie is a random
//! session id held server-side ([`sessions`]), ending on logout, after an idle spell
//! (`http_session_idle_secs`) or at an absolute age (`http_session_lifetime_secs`).
//!
//! Guessing: every place a token is checked (login form, Bearer header) goes through one
//! per-client [`limiter`]: five wrong tokens a minute, then 429. Tokens are compared as
//! SHA-256 digests in constant time, so neither the bytes nor the length leak through timing.
//!
//! Cross-site requests: every state-changing request from a browser is refused unless its
//! `Origin` (or `Referer`) names this master ([`origin`]); `SameSite=Strict` alone would let
//! any page on the same host (another port: a task's web server) post with the cookie. A
//! request with neither header is a non-browser client and passes, unless it leans on the
//! cookie, the one credential a browser attaches by itself.
//!
//! The Mesos scheduler API (`/api/v1/scheduler`, `http/mesos/`) is deliberately outside the
//! cross-site check: its credential is HTTP Basic, which a browser attaches only after a person
//! typed it into the browser's own prompt for this origin, and every call must be
//! `Content-Type: application/json`, which a foreign page cannot send without a CORS preflight
//! that this server never approves. pymesos sends no `Origin`, so the check would only be dead
//! weight there; its Basic secrets are compared in constant time in `http/mesos/auth.rs`.
//!
//! `Secure`: the master itself speaks plain HTTP (TLS, if any, is a reverse proxy in front),
//! so the cookie is marked `Secure` only when `http_cookie_secure` is set or the request came
//! through a proxy saying `X-Forwarded-Proto: https`. Trusting that header is safe here: it can
//! only restrict the requester's own cookie to HTTPS.

mod limiter;
mod origin;
mod sessions;

use super::api::error;
use super::AppState;
use crate::config::MasterConfig;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use limiter::{Client, LoginLimiter};
use origin::Provenance;
use ring::digest::{digest, SHA256};
use ring::rand::SystemRandom;
use serde::Deserialize;
use serde_json::json;
use sessions::{Expiry, Sessions, MAX_SESSIONS};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

/// Name of the login cookie.
pub(crate) const COOKIE: &str = "bramble_session";

/// What access control needs from the master's configuration.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub token: String,
    pub session_idle: Duration,
    pub session_lifetime: Duration,
    /// Mark the cookie `Secure` (the UI is reached over HTTPS through a proxy).
    pub secure_cookie: bool,
}

impl AccessConfig {
    /// `None` when no `http_token` is set: the HTTP side is then read-only and open.
    pub fn from_config(cfg: &MasterConfig) -> Option<Self> {
        Some(Self {
            token: cfg.http_token.clone()?,
            session_idle: Duration::from_secs(cfg.http_session_idle_secs),
            session_lifetime: Duration::from_secs(cfg.http_session_lifetime_secs),
            secure_cookie: cfg.http_cookie_secure,
        })
    }
}

/// Access control's state, shared by every request.
pub(crate) struct Auth {
    token_digest: [u8; 32],
    sessions: Mutex<Sessions>,
    limiter: Mutex<LoginLimiter>,
    rng: SystemRandom,
    lifetime: Duration,
    secure_cookie: bool,
}

/// Why a token was not accepted.
enum TokenRefused {
    Wrong,
    /// The client guessed too often; it may try again after this long.
    TooMany(Duration),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can be left half-updated by a panic; a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    pub fn new(cfg: AccessConfig) -> Self {
        let expiry = Expiry {
            idle: cfg.session_idle,
            lifetime: cfg.session_lifetime,
        };
        Self {
            token_digest: sha256(&cfg.token),
            sessions: Mutex::new(Sessions::new(expiry, MAX_SESSIONS)),
            limiter: Mutex::new(LoginLimiter::default()),
            rng: SystemRandom::new(),
            lifetime: cfg.session_lifetime,
            secure_cookie: cfg.secure_cookie,
        }
    }

    /// Checks a presented token, counting a wrong one against `client`. The limiter's lock is
    /// held from the check to the record, so parallel guesses are counted one by one.
    fn check_token(
        &self,
        client: Client,
        candidate: &str,
        now: Instant,
    ) -> Result<(), TokenRefused> {
        let mut limiter = lock(&self.limiter);
        limiter.check(client, now).map_err(TokenRefused::TooMany)?;
        let right: bool = sha256(candidate).ct_eq(&self.token_digest).into();
        if right {
            limiter.succeeded(client);
            return Ok(());
        }
        limiter.failed(client, now);
        if limiter.check(client, now).is_err() {
            warn!(%client, "{} wrong HTTP tokens within {:?}; refusing this client's tokens for a while", limiter::MAX_FAILURES, limiter::WINDOW);
        }
        Err(TokenRefused::Wrong)
    }

    /// Whether a session cookie in `headers` names a live session (which then counts as used).
    fn session_valid(&self, headers: &HeaderMap, now: Instant) -> bool {
        let mut sessions = lock(&self.sessions);
        session_cookies(headers).any(|id| sessions.touch(id, now))
    }

    /// The `Set-Cookie` value for a new session id.
    fn cookie(&self, id: &str, headers: &HeaderMap) -> String {
        let secure = if self.secure_cookie || forwarded_https(headers) {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.lifetime.as_secs()
        )
    }
}

fn sha256(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, text.as_bytes()).as_ref());
    out
}

/// Every value of our cookie in the request's `Cookie` headers.
fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The client a request came from (every request is served with its peer address; a request
/// without one is counted under a single shared key, which errs on the safe side).
fn client_of(req: &Request) -> Client {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
        .into()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"bramble\"")],
        Json(json!({ "error": "this master needs its HTTP token" })),
    )
        .into_response()
}

fn too_many(wait: Duration) -> Response {
    // Round up: retrying a fraction of a second early would only be refused again.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from this address; try again in {secs} s"),
    );
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

/// Middleware: with a token configured, lets a request through only with a live session
/// cookie or `Authorization: Bearer TOKEN`.
pub(super) async fn require_token(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(auth) = &app.auth else {
        return next.run(req).await;
    };
    match auth.refusal(&req) {
        None => next.run(req).await,
        Some(refused) => refused,
    }
}

impl Auth {
    /// `None` when `req` carries a live session cookie or the right `Authorization: Bearer`
    /// token; the refusal (401, or 429 after too many wrong tokens) otherwise. Also what a
    /// standby master (`ha/standby.rs`) checks: it answers with the same token the leader
    /// requires.
    pub(crate) fn refusal(&self, req: &Request) -> Option<Response> {
        let now = Instant::now();
        let verdict = if self.session_valid(req.headers(), now) {
            Ok(())
        } else if let Some(token) = bearer(req.headers()) {
            self.check_token(client_of(req), token, now)
        } else {
            Err(TokenRefused::Wrong)
        };
        match verdict {
            Ok(()) => None,
            Err(TokenRefused::Wrong) => Some(unauthorized()),
            Err(TokenRefused::TooMany(wait)) => Some(too_many(wait)),
        }
    }
}

/// Middleware on every browser-facing route: a state-changing request (anything but GET,
/// HEAD, OPTIONS) from another origin is refused with 403, before any credential is looked at.
pub(super) async fn refuse_cross_site(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let headers = req.headers();
    match origin::provenance(headers) {
        Provenance::SameOrigin => {}
        Provenance::CrossOrigin(from) => {
            warn!(%from, path = %req.uri().path(), "refused a cross-origin {} to the HTTP API", req.method());
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin request refused (Origin/Referer {from:?} is not this master)"
                ),
            );
        }
        // A browser always sends `Origin` on a POST; without it (and without a Referer) only a
        // request that does not lean on the cookie is trusted to be a script.
        Provenance::Unknown => {
            if session_cookies(headers).next().is_some() && bearer(headers).is_none() {
                warn!(path = %req.uri().path(), "refused a cookie-authenticated {} without Origin or Referer", req.method());
                return error(
                    StatusCode::FORBIDDEN,
                    "a request carrying the session cookie must say where it comes from (Origin); scripts should use Authorization: Bearer",
                );
            }
        }
    }
    next.run(req).await
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /api/v1/login` (form field `token`): starts a session and sets its cookie.
pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(auth) = &app.auth else {
        return Json(json!({ "auth": false })).into_response();
    };
    let now = Instant::now();
    match auth.check_token(peer.ip().into(), &form.token, now) {
        Ok(()) => {}
        Err(TokenRefused::Wrong) => return error(StatusCode::UNAUTHORIZED, "wrong token"),
        Err(TokenRefused::TooMany(wait)) => return too_many(wait),
    }
    let created = lock(&auth.sessions).create(&auth.rng, now);
    match created {
        Ok(id) => {
            info!(client = %peer.ip(), "HTTP login");
            (
                StatusCode::NO_CONTENT,
                [(header::SET_COOKIE, auth.cookie(&id, &headers))],
            )
                .into_response()
        }
        Err(e) => {
            warn!("HTTP login: cannot create a session: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// `POST /api/v1/logout`: ends the session the cookie names, here on the server (the old
/// cookie no longer works anywhere), and tells the browser to drop it.
pub async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(auth) = &app.auth {
        let mut sessions = lock(&auth.sessions);
        for id in session_cookies(&headers) {
            sessions.revoke(id);
        }
    }
    (
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secure: bool) -> Auth {
        Auth::new(AccessConfig {
            token: "s3cret-token".into(),
            session_idle: Duration::from_secs(60),
            session_lifetime: Duration::from_secs(3600),
            secure_cookie: secure,
        })
    }

    #[test]
    fn the_cookie_is_secure_when_configured_or_behind_an_https_proxy() {
        let plain = HeaderMap::new();
        let mut proxied = HeaderMap::new();
        proxied.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let c = auth(false).cookie("id", &plain);
        assert_eq!(
            c,
            "bramble_session=id; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        assert!(auth(false).cookie("id", &proxied).ends_with("; Secure"));
        assert!(auth(true).cookie("id", &plain).ends_with("; Secure"));
    }

    #[test]
    fn tokens_are_checked_whatever_their_length_and_guesses_are_limited() {
        let a = auth(false);
        let client: Client = IpAddr::V4(Ipv4Addr::LOCALHOST).into();
        let now = Instant::now();
        assert!(a.check_token(client, "s3cret-token", now).is_ok());
        for guess in ["", "s3cret-toke", "s3cret-token!", "S3cret-token", "x"] {
            assert!(matches!(
                a.check_token(client, guess, now),
                Err(TokenRefused::Wrong)
            ));
        }
        assert!(
            matches!(
                a.check_token(client, "s3cret-token", now),
                Err(TokenRefused::TooMany(_))
            ),
            "limited even with the right token, so a limited guesser learns nothing"
        );
    }
}
