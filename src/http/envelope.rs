//! The success envelope of the seed, `{"status": "success", "data": …}`: the answer every
//! handler returns, and the macro that declares its shape for the OpenAPI document.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::error::ApiError;

#[derive(Debug)]
pub struct Success<T>(pub T);

/// `"success"`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuccessStatus {
    Success,
}

#[derive(Serialize)]
struct Envelope<T> {
    status: SuccessStatus,
    data: T,
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        Json(Envelope { status: SuccessStatus::Success, data: self.0 }).into_response()
    }
}

impl<T: Serialize> Success<T> {
    /// The answer, serialised now into a buffer of `capacity` bytes: for large answers built
    /// under a lock, where growing the buffer again and again would cost time and memory.
    pub fn render(self, capacity: usize) -> Response {
        let mut body = Vec::with_capacity(capacity);
        match serde_json::to_writer(&mut body, &Envelope { status: SuccessStatus::Success, data: self.0 }) {
            Ok(()) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
            Err(error) => ApiError::Internal(error.to_string()).into_response(),
        }
    }
}

/// Declares `$name`, the success envelope around `$data`, for the document.
macro_rules! success_envelope {
    ($name:ident, $data:ty) => {
        #[derive(Debug, Serialize, utoipa::ToSchema)]
        #[allow(dead_code)]
        pub struct $name {
            status: $crate::http::SuccessStatus,
            data: $data,
        }
    };
}
pub(crate) use success_envelope;
