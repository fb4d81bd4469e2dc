//! `/console`: the web console, a self-contained page built into the binary. Its script and
//! styles are files of their own, so the Content-Security-Policy can refuse every inline script
//! and every other origin.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Only this origin, for scripts, styles, images and calls; no inline script, no frames, no
/// plugins, no form posted elsewhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The assets change with the binary: a browser asks again rather than keep a stale page.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /console`, and `GET /docs`: the same page, which opens at its API reference there.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", include_str!("console/index.html"))
}

/// `GET /console/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("console/app.js"))
}

/// `GET /console/app.css`.
pub async fn styles() -> Response {
    asset("text/css; charset=utf-8", include_str!("console/app.css"))
}
