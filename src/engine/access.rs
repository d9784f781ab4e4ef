//! Who may do what (PRODUCT.md section 2): the roles of an environment, the check, and the
//! refusal — private, naming who may, and written to the audit log.

use anyhow::Result;

use super::{render, Engine, Reply};
use crate::chat::UserRef;
use crate::config::Environment;

/// A role that allows an action on an environment.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role<'a> {
    /// Listed in the environment's `deployers`.
    Deployer,
    /// Listed in its `[approvals] approvers`; where it has none, its deployers.
    Approver,
    /// This very user (the requester of a deployment, the holder of a lock).
    Is(&'a str, &'a str),
}

impl Engine {
    /// Whether `user` has one of `roles` in `env`.
    pub(crate) async fn has_role(&self, user: &str, env: &Environment, roles: &[Role<'_>]) -> Result<bool> {
        for role in roles {
            let ok = match role {
                Role::Deployer => self.allowed(user, &env.base.deployers).await?,
                Role::Approver => self.allowed(user, approvers_of(env)).await?,
                Role::Is(id, _) => *id == user,
            };
            if ok {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `None` when `user` may `action`; otherwise the private refusal, audited.
    pub(crate) async fn authorize(&self, user: &UserRef, action: &str, env: &Environment, deployment: Option<i64>, roles: &[Role<'_>]) -> Result<Option<Reply>> {
        if self.has_role(&user.id, env, roles).await? {
            return Ok(None);
        }
        let who: Vec<String> = roles.iter().map(|r| describe(r, env)).collect();
        let text = format!("🚫 You may not {action}. Who may: {}.", join_or(&who));
        self.store.audit(self.now_ms(), &user.id, &format!("refused:{}", action.split_whitespace().next().unwrap_or(action)), Some(env.name.as_str()), deployment, Some(&text)).await?;
        tracing::info!(user = %user.id, env = %env.name, action, "refused an unauthorized request");
        Ok(Some(Reply(text)))
    }
}

/// The approvers of an environment, or its deployers where it has none.
fn approvers_of(env: &Environment) -> &[String] {
    match &env.approvals {
        Some(a) if !a.approvers.is_empty() => &a.approvers,
        _ => &env.base.deployers,
    }
}

fn describe(role: &Role<'_>, env: &Environment) -> String {
    match role {
        Role::Deployer => format!("a deployer of {} ({})", env.name, people(&env.base.deployers)),
        Role::Approver if env.approvals.as_ref().is_some_and(|a| !a.approvers.is_empty()) => format!("an approver of {} ({})", env.name, people(approvers_of(env))),
        Role::Approver => format!("a deployer of {} ({}; it has no approvers)", env.name, people(approvers_of(env))),
        Role::Is(id, what) => format!("{what} ({})", render::mention(id)),
    }
}

/// `<@U1>, group S0DEVOPS`; `anyone` for `*`.
pub(crate) fn people(list: &[String]) -> String {
    if list.is_empty() {
        return "nobody is configured".into();
    }
    list.iter()
        .map(|p| match p.as_str() {
            "*" => "anyone".to_string(),
            p => match p.strip_prefix("group:").or_else(|| p.strip_prefix("role:")) {
                Some(g) => format!("members of {g}"),
                None => render::mention(p),
            },
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
