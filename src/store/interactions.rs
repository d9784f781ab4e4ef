//! Discord interaction tokens (`discord_interactions`): what answering a command needs, for as
//! long as Discord accepts it.

use anyhow::{Context, Result};
use sqlx::Row;

use super::Store;
use crate::model::Millis;

impl Store {
    /// Records an interaction's token (once) and forgets the ones older than `keep_ms`.
    pub async fn put_interaction_token(&self, interaction_id: &str, token: &str, now: Millis, keep_ms: i64) -> Result<()> {
        sqlx::query("INSERT INTO discord_interactions (interaction_id, token, received_at) VALUES ($1, $2, $3) ON CONFLICT (interaction_id) DO NOTHING")
            .bind(interaction_id)
            .bind(token)
            .bind(now)
            .execute(self.db())
            .await
            .context("failed to record a Discord interaction")?;
        sqlx::query("DELETE FROM discord_interactions WHERE received_at < $1").bind(now - keep_ms).execute(self.db()).await?;
        Ok(())
    }

    /// The token of an interaction received after `since`, and when it was received.
    pub async fn interaction_token(&self, interaction_id: &str, since: Millis) -> Result<Option<(String, Millis)>> {
        let row = sqlx::query("SELECT token, received_at FROM discord_interactions WHERE interaction_id = $1 AND received_at >= $2")
            .bind(interaction_id)
            .bind(since)
            .fetch_optional(self.db())
            .await?;
        Ok(row.map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))))
    }
}
