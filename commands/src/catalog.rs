//! The operator's environments and services, against which names in commands are resolved.

use crate::newtypes::{EnvName, ServiceName};
use crate::text::{closest, echo};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Environment {
    name: EnvName,
    aliases: Vec<String>,
}

/// What a command may name: the configured environments (canonical name and aliases) and services.
///
/// An empty list accepts any well-formed name, which is what [`Catalog::empty`] is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalog {
    environments: Vec<Environment>,
    services: Vec<ServiceName>,
}

impl Catalog {
    /// Environments in the config's order, each with its aliases, and the services.
    pub fn new(envs: Vec<(EnvName, Vec<String>)>, services: Vec<ServiceName>) -> Self {
        let environments = envs
            .into_iter()
            .map(|(name, aliases)| Environment {
                name,
                aliases: aliases.iter().map(|a| a.to_lowercase()).collect(),
            })
            .collect();
        Catalog {
            environments,
            services,
        }
    }

    /// A catalog that accepts any syntactically valid environment and service name.
    pub fn empty() -> Self {
        Catalog::default()
    }

    /// The canonical environments, in the config's order.
    pub fn environments(&self) -> impl Iterator<Item = &EnvName> {
        self.environments.iter().map(|e| &e.name)
    }

    pub fn services(&self) -> &[ServiceName] {
        &self.services
    }

    /// The environment a name or alias refers to, ignoring case; a canonical name wins over
    /// another environment's alias.
    pub fn environment(&self, name_or_alias: &str) -> Option<&EnvName> {
        let wanted = name_or_alias.to_lowercase();
        let by_name = self.environments.iter().find(|e| e.name.as_str() == wanted);
        by_name
            .or_else(|| {
                self.environments
                    .iter()
                    .find(|e| e.aliases.contains(&wanted))
            })
            .map(|e| &e.name)
    }

    /// Resolves what the user typed to a canonical environment, or says what they may type.
    pub(crate) fn resolve_env(&self, typed: &str) -> Result<EnvName, String> {
        if self.environments.is_empty() {
            return EnvName::new(&typed.to_lowercase()).map_err(|_| {
                format!(
                    "malformed environment {} — environment names are lowercase letters, digits, - and _",
                    echo(typed)
                )
            });
        }
        if let Some(env) = self.environment(typed) {
            return Ok(env.clone());
        }
        let spellings = self.environments.iter().flat_map(|e| {
            std::iter::once(e.name.as_str()).chain(e.aliases.iter().map(String::as_str))
        });
        let hint = closest(typed, spellings)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        Err(format!(
            "unknown environment {}{hint} — known environments: {}",
            echo(typed),
            self.describe_envs()
        ))
    }

    /// `development (dev), staging (stg), production (prod)`
    fn describe_envs(&self) -> String {
        self.environments
            .iter()
            .map(|e| match e.aliases.as_slice() {
                [] => e.name.to_string(),
                aliases => format!("{} ({})", e.name, aliases.join(", ")),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn resolve_service(&self, typed: &str) -> Result<ServiceName, String> {
        if self.services.is_empty() {
            return ServiceName::new(&typed.to_lowercase()).map_err(|_| {
                format!(
                    "malformed service {} — service names are lowercase letters, digits, - and _",
                    echo(typed)
                )
            });
        }
        let wanted = typed.to_lowercase();
        if let Some(service) = self.services.iter().find(|s| s.as_str() == wanted) {
            return Ok(service.clone());
        }
        let hint = closest(typed, self.services.iter().map(ServiceName::as_str))
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        let known: Vec<&str> = self.services.iter().map(ServiceName::as_str).collect();
        Err(format!(
            "unknown service {}{hint} — known services: {}",
            echo(typed),
            known.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> EnvName {
        EnvName::new(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn catalog() -> Catalog {
        Catalog::new(
            vec![
                (env("staging"), vec!["stg".into()]),
                (env("production"), vec!["prod".into(), "PRD".into()]),
            ],
            vec![ServiceName::new("backend").unwrap_or_else(|e| panic!("{e}"))],
        )
    }

    #[test]
    fn aliases_resolve_to_the_canonical_name_whatever_the_case() {
        let catalog = catalog();
        for typed in ["production", "prod", "Prod", "prd", "PRODUCTION"] {
            assert_eq!(
                catalog.resolve_env(typed),
                Ok(env("production")),
                "for {typed}"
            );
        }
        assert_eq!(catalog.environment("stg"), Some(&env("staging")));
        assert_eq!(catalog.environment("qa"), None);
    }

    #[test]
    fn a_canonical_name_wins_over_another_environments_alias() {
        let catalog = Catalog::new(
            vec![(env("a"), vec!["b".into()]), (env("b"), vec![])],
            vec![],
        );
        assert_eq!(catalog.environment("b"), Some(&env("b")));
    }

    #[test]
    fn an_unknown_environment_lists_the_known_ones() {
        assert_eq!(
            catalog().resolve_env("qa"),
            Err(r#"unknown environment "qa" — known environments: staging (stg), production (prod, prd)"#.into())
        );
        assert_eq!(
            catalog().resolve_env("stagign"),
            Err(r#"unknown environment "stagign" (did you mean staging?) — known environments: staging (stg), production (prod, prd)"#.into())
        );
    }

    #[test]
    fn an_empty_catalog_accepts_any_well_formed_name() {
        let empty = Catalog::empty();
        assert_eq!(empty.resolve_env("QA-1"), Ok(env("qa-1")));
        assert!(empty.resolve_env("q a").is_err());
        assert!(empty.resolve_service("anything").is_ok());
        assert!(empty.resolve_service("no/slash").is_err());
    }

    #[test]
    fn an_unknown_service_lists_the_known_ones() {
        assert_eq!(
            catalog().resolve_service("backedn"),
            Err(
                r#"unknown service "backedn" (did you mean backend?) — known services: backend"#
                    .into()
            )
        );
    }
}
