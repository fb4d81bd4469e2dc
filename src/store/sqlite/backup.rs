//! What a backup reads besides the log (servers, webhook endpoints), and `import`: a verified
//! ledger written into an empty file in one write transaction.

use sqlx::FromRow;
use uuid::Uuid;

use super::{read_head, read_time, rebuild_in, sql, stored_time, SqliteStore, StoreError};
use crate::store::backup::{ImportBatch, Imported, StoredEndpoint, StoredServer, IN_PROCESS_WEBHOOKS_CHECKPOINT};

#[derive(FromRow)]
struct ServerRow {
    uuid: Uuid,
    name: String,
    created_at: String,
}

#[derive(FromRow)]
struct EndpointRow {
    uuid: Uuid,
    server_uuid: Uuid,
    url: String,
    events: String,
    description: Option<String>,
    secret: String,
    created_at: String,
    disabled_at: Option<String>,
    disabled_reason: Option<String>,
    deleted_at: Option<String>,
}

impl EndpointRow {
    fn endpoint(self) -> Result<StoredEndpoint, StoreError> {
        let events = serde_json::from_str(&self.events).map_err(|_| StoreError::Corrupt {
            position: 0,
            reason: format!("webhook endpoint {}: its events are not a JSON array of names", self.uuid),
        })?;
        let time = |text: Option<String>| text.as_deref().map(|text| read_time(text, 0)).transpose();
        Ok(StoredEndpoint {
            created_at: read_time(&self.created_at, 0)?,
            disabled_at: time(self.disabled_at)?,
            deleted_at: time(self.deleted_at)?,
            uuid: self.uuid,
            server_uuid: self.server_uuid,
            url: self.url,
            events,
            description: self.description,
            secret: self.secret,
            disabled_reason: self.disabled_reason,
        })
    }
}

impl SqliteStore {
    pub async fn backup_servers(&self) -> Result<Vec<StoredServer>, StoreError> {
        let rows = sqlx::query_as::<_, ServerRow>(sql::BACKUP_SERVERS).fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| Ok(StoredServer { created_at: read_time(&row.created_at, 0)?, uuid: row.uuid, name: row.name }))
            .collect()
    }

    pub async fn backup_endpoints(&self) -> Result<Vec<StoredEndpoint>, StoreError> {
        let rows = sqlx::query_as::<_, EndpointRow>(sql::BACKUP_ENDPOINTS).fetch_all(&self.pool).await?;
        rows.into_iter().map(EndpointRow::endpoint).collect()
    }

    /// See `Store::import`: under the write lock, from the emptiness check to the commit.
    pub async fn import(&self, batch: ImportBatch<'_>) -> Result<Imported, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let head = read_head(&mut tx).await?;
        let servers: i64 = sqlx::query_scalar(sql::COUNT_SERVERS).fetch_one(&mut *tx).await?;
        let endpoints: i64 = sqlx::query_scalar(sql::COUNT_ENDPOINTS).fetch_one(&mut *tx).await?;
        if head.position > 0 || servers > 0 || endpoints > 0 {
            return Err(StoreError::NotEmpty(format!(
                "head at position {}, {servers} servers, {endpoints} webhook endpoints",
                head.position
            )));
        }

        for server in batch.servers {
            sqlx::query(sql::INSERT_SERVER)
                .bind(server.uuid)
                .bind(&server.name)
                .bind(stored_time(server.created_at))
                .execute(&mut *tx)
                .await?;
        }
        for endpoint in batch.endpoints {
            // A list of strings always serialises.
            let events = serde_json::to_string(&endpoint.events).unwrap_or_default();
            sqlx::query(sql::INSERT_ENDPOINT)
                .bind(endpoint.uuid)
                .bind(endpoint.server_uuid)
                .bind(&endpoint.url)
                .bind(events)
                .bind(&endpoint.description)
                .bind(&endpoint.secret)
                .bind(stored_time(endpoint.created_at))
                .bind(endpoint.disabled_at.map(stored_time))
                .bind(&endpoint.disabled_reason)
                .bind(endpoint.deleted_at.map(stored_time))
                .execute(&mut *tx)
                .await?;
        }
        super::records::insert_stored_events(&mut tx, batch.events).await?;
        let position = match batch.events.last() {
            Some(last) => {
                sqlx::query(sql::MOVE_HEAD)
                    .bind(last.position)
                    .bind(&last.hash)
                    .bind(batch.ledger.last_credential_id())
                    .bind(stored_time(last.recorded_at))
                    .execute(&mut *tx)
                    .await?;
                last.position
            }
            None => 0,
        };
        let now = stored_time(chrono::Utc::now());
        sqlx::query(sql::SET_CHECKPOINT)
            .bind(IN_PROCESS_WEBHOOKS_CHECKPOINT)
            .bind(position)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        let report = rebuild_in(&mut tx).await?;
        tx.commit().await?;
        Ok(Imported { position: report.position, events: report.events, credentials: report.credentials })
    }
}
