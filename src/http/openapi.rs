//! The OpenAPI 3.1 document, generated from the handlers' own types, and the `/docs` page
//! that calls the API from a browser with it.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorData, ErrorEnvelope};
use super::{audit, credentials, ops, webhooks};
use crate::store::{AttemptListing, WebhookEndpoint};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "credential-ledger",
        description = "An event-sourced ledger of API and SMTP credentials. Every call is `POST` with a JSON \
                       body, authenticated by `X-Server-API-Key`, and answers `{\"status\": \"success\"|\"error\", \
                       \"data\": …}`.",
        contact(name = "credential-ledger maintainers")
    ),
    servers((url = "/", description = "The service that serves this document")),
    paths(
        credentials::list,
        credentials::create,
        credentials::regenerate,
        credentials::revoke,
        audit::history,
        audit::list_events,
        webhooks::create,
        webhooks::list,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::retry,
        ops::livez,
        ops::healthz,
        ops::readyz,
    ),
    components(schemas(ErrorEnvelope, ErrorData, WebhookEndpoint, AttemptListing)),
    modifiers(&ApiKeySecurity),
    tags(
        (name = "credentials", description = "Issue, list, rotate and revoke credentials"),
        (name = "audit", description = "The history of the ledger"),
        (name = "webhooks", description = "Signed CredentialLocked webhooks"),
        (name = "operations", description = "Health and readiness"),
    )
)]
struct ApiDoc;

struct ApiKeySecurity;

impl Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Server-API-Key",
                "An API credential's key (vml_…). SMTP and held credentials do not authenticate.",
            ))),
        );
    }
}

pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    match openapi_document().to_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => super::ApiError::Internal(error.to_string()).into_response(),
    }
}

/// `GET /docs`: the interactive page. Self-contained: nothing is fetched from elsewhere.
pub async fn docs_page() -> Response {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:",
        )],
        Html(include_str!("docs.html")),
    )
        .into_response()
}
