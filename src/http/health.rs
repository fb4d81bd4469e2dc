use axum::extract::State;
use serde::Serialize;

use super::{ApiError, AppState, Success};

#[derive(Debug, Serialize)]
pub struct Health {
    database: &'static str,
}

/// `GET /healthz`: 200 while the database answers, 503 when it does not.
pub async fn healthz(State(app): State<AppState>) -> Result<Success<Health>, ApiError> {
    match tokio::time::timeout(app.health_timeout, app.store.ping()).await {
        Ok(Ok(())) => Ok(Success(Health { database: "up" })),
        Ok(Err(error)) => Err(ApiError::Unavailable(error.to_string())),
        Err(_) => Err(ApiError::Unavailable(
            "the database did not answer in time".into(),
        )),
    }
}
