//! Provisioning a server (tenant) and its first API credential, in one transaction.

use rand::rngs::OsRng;
use uuid::Uuid;

use crate::app::writer::WriteError;
use crate::domain::{
    handle, Actor, ApiKey, Command, Credential, CredentialName, CredentialType, DomainError, EventMetadata,
    KeyMaterial, Outcome, ServerName,
};
use crate::store::{Decision, NewEvent, Store};

pub struct ProvisionedServer {
    pub server_uuid: Uuid,
    pub credential: Credential,
    pub key: ApiKey,
}

pub async fn provision_server(
    store: &Store,
    name: &ServerName,
    credential_name: CredentialName,
) -> Result<ProvisionedServer, WriteError> {
    let unavailable = |error| WriteError::Unavailable(std::sync::Arc::new(error));
    let server_uuid = Uuid::new_v4();
    let key = ApiKey::generate(&mut OsRng);
    let command = Command::Create {
        server_uuid,
        credential_uuid: Uuid::new_v4(),
        name: credential_name,
        credential_type: CredentialType::Api,
        hold: false,
        key: KeyMaterial::from(&key),
        expires_at: None,
    };
    let metadata = EventMetadata { actor: Actor::Cli, request_id: None, source_ip: None };

    let appended = store
        .append(None, &[], |ledger, now| match handle(ledger, &command, &metadata.actor, now) {
            Ok(handled) => Decision {
                servers: vec![(server_uuid, name.clone())],
                events: handled.events.into_iter().map(|pending| NewEvent { pending, metadata: &metadata }).collect(),
                value: Ok(handled.outcome),
            },
            Err(refused) => Decision { servers: Vec::new(), events: Vec::new(), value: Err(refused) },
        })
        .await
        .map_err(unavailable)?;
    let outcome = appended.value?;
    let Outcome::Created(credential) = outcome else {
        return Err(DomainError::Inconsistent("a create command had another outcome".into()).into());
    };
    Ok(ProvisionedServer { server_uuid, credential, key })
}
