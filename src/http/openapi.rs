//! The OpenAPI 3.1 document, generated from the handlers' own types. The console's API
//! reference (`/docs`) is built from it in the browser.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref};
use utoipa::{Modify, OpenApi};

use super::error::{ErrorData, ErrorEnvelope};
use super::{audit, credentials, ops, webhooks};
use crate::store::{AttemptListing, WebhookEndpoint};
use crate::webhooks::WebhookBody;

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
        audit::chain_head,
        webhooks::create,
        webhooks::list,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::retry,
        ops::livez,
        ops::healthz,
        ops::readyz,
    ),
    components(schemas(ErrorEnvelope, ErrorData, WebhookEndpoint, AttemptListing, WebhookBody)),
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
        // No operation answers it, but every path outside the document does.
        components.responses.insert(
            "NotFound".to_owned(),
            ResponseBuilder::new()
                .description("`not_found`: no such path")
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).build(),
                )
                .build()
                .into(),
        );
    }
}

/// The document as served: utoipa's, with the OpenAPI 3.1 `webhooks` section it has no model
/// for, describing the request the service sends to an endpoint.
pub fn openapi_document() -> Result<serde_json::Value, serde_json::Error> {
    let mut document = serde_json::to_value(ApiDoc::openapi())?;
    plain_optional_bodies(&mut document);
    let header = |name: &str, description: &str| json!({"name": name, "in": "header", "required": true, "description": description, "schema": {"type": "string"}});
    document["webhooks"] = json!({
        "CredentialLocked": {
            "post": {
                "operationId": "credentialLocked",
                "summary": "A credential was locked",
                "description": "Sent to every endpoint subscribed to `CredentialLocked` when one of the server's \
                    credentials is revoked, rotated away or reaches its deadline, signed as the Standard Webhooks \
                    specification says. Answer 2xx to acknowledge; `410 Gone` disables the endpoint; anything \
                    else, or no answer in time, is retried with backoff.",
                "tags": ["webhooks"],
                "parameters": [
                    header("webhook-id", "`msg_` and the event's id: the same for every attempt, to deduplicate on"),
                    header("webhook-timestamp", "Unix seconds when this attempt was signed"),
                    header("webhook-signature", "`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`"),
                ],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CredentialLockedWebhook"}}}
                },
                "responses": {
                    "2XX": {"description": "Received"},
                    "410": {"description": "Gone: the service disables the endpoint and sends it nothing more"}
                }
            }
        }
    });
    Ok(document)
}

/// An optional body (`list`'s, for one) is written by utoipa as a schema of `null` or the
/// object. Generators such as openapi-python-client then send a JSON `null` they cannot encode
/// when the caller gives no body. A body that is not `required`, with the object's schema, says
/// the same in the form they handle: send the object, or nothing.
fn plain_optional_bodies(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(serde_json::Value::as_object_mut) else { return };
    let operations = paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(serde_json::Value::as_object_mut);
    for operation in operations {
        let Some(body) = operation.get_mut("requestBody") else { continue };
        if body.get("required").and_then(serde_json::Value::as_bool) == Some(true) {
            continue;
        }
        let Some(schema) = body.pointer_mut("/content/application~1json/schema") else { continue };
        let object =
            schema.get("oneOf").and_then(serde_json::Value::as_array).and_then(|choices| match choices.as_slice() {
                [null, object] | [object, null] if null.get("type").is_some_and(|kind| kind == "null") => {
                    Some(object.clone())
                }
                _ => None,
            });
        if let Some(object) = object {
            *schema = object;
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    match openapi_document() {
        Ok(document) => ([(header::CONTENT_TYPE, "application/json")], document.to_string()).into_response(),
        Err(error) => super::ApiError::Internal(error.to_string()).into_response(),
    }
}
